// The login page: the form posts to /login itself; this only words the error it came back with.
import { t } from "./common.js";

const box = document.getElementById("login-error");
function showError() {
  if (box) box.textContent = t(`login.error.${box.dataset.error}`, {}, t("login.error.generic", { reason: box.dataset.error }));
}
showError();
document.addEventListener("langchange", showError);
