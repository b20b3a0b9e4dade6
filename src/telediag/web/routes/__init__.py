"""One router per stage; ``telediag.web.app`` includes them all."""
