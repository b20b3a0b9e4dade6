"""The push stage: critical-value alarms reach the clinics and the centers above them, and
signed reports reach the clinic that sent the exam (``report`` events written by the review
stage's signature, acknowledged as ``report_ack``), over the same events, outbox and channels.

- alarm use cases (:mod:`telediag.push.alarms`): list, show with who was notified, acknowledge;
- channels (:mod:`telediag.push.channels`): MQTT and webhook adapters behind ``Channel``;
- :class:`DeliveryRunner` and the ``deliver_alarms`` actor: claim, send, mark, retry with backoff;
- :class:`PushSweeper`: re-sends what a crash left, escalates unacknowledged critical alarms;
- :class:`AlarmFeed`: the Server-Sent Events stream of an API process, read from the database.

Alarms, their events and the deliveries are rows written in the transaction that raised them
(analysis, acknowledgement, escalation, signature): the outbox pattern the jobs use.
"""

from telediag.push.alarms import (acknowledge_alarm, alarm_detail, alarm_json, events_since, last_event_id,
                                  list_alarms)
from telediag.push.channels import (SIGNATURE_HEADER, Channel, MqttChannel, PushFailed, WebhookChannel, body_of, sign,
                                    topic_of)
from telediag.push.feed import AlarmFeed
from telediag.push.runner import PUSH_QUEUE, DeliveryRunner, declare_push_actor
from telediag.push.sweeper import PushSweeper

__all__ = ["acknowledge_alarm", "alarm_detail", "alarm_json", "events_since", "last_event_id", "list_alarms",
           "Channel", "MqttChannel", "WebhookChannel", "PushFailed", "SIGNATURE_HEADER", "body_of", "sign", "topic_of",
           "AlarmFeed", "DeliveryRunner", "declare_push_actor", "PUSH_QUEUE", "PushSweeper"]
