"""The email channel: one message per notification over SMTP (the bureau's relay in production).

The `Message-ID` is derived from the notification's key, so a mail system or client that
de-duplicates on it shows a message sent twice (a retry after a lost reply) once. The text part
is for people; the same `safewatch.alert/v1` JSON as the webhook is attached for programs.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from alerts.store import Notification, Task
from config.settings import Settings

log = logging.getLogger(__name__)
HEADLINE = {"task": "New task", "escalation": "ESCALATION", "handover": "Handed over", "revision": "Update"}


def message_id(notification: Notification) -> str:
    """One Message-ID per (task, channel, sequence number); dots, as a colon is not allowed there."""
    return f"<{notification.key.replace(':', '.')}@safewatch>"


def email_message(
    notification: Notification, task: Task, payload: dict[str, Any], settings: Settings, to: list[str]
) -> EmailMessage:
    """The message for one notification: a readable text part and the JSON body attached."""
    labels, annotations = payload["labels"], payload["annotations"]
    status = "RESOLVED" if payload["status"] == "resolved" else labels["severity"].upper()
    message = EmailMessage()
    message["Subject"] = (
        f"[safewatch {status}] {HEADLINE[notification.kind]}: {annotations['summary']} (region {labels['region']})"
    )
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = message_id(notification)
    message["X-Safewatch-Key"] = notification.key
    lines = [
        annotations["description"],
        "",
        f"Incident {task.incident_id}, {labels['sector']} sector,"
        f" enterprise {labels['enterprise_id']}, site {labels['site_id']}.",
        f"Task {task.task_id} for {task.department}: {task.status}.",
        f"Open it (API token needed): {annotations['task_url']}",
    ]
    message.set_content("\n".join(lines))
    message.add_attachment(
        json.dumps(payload, ensure_ascii=False, indent=1).encode(),
        maintype="application",
        subtype="json",
        filename="alert.json",
    )
    return message


def send_email(settings: Settings, message: EmailMessage) -> tuple[int | None, str | None, bool]:
    """Send over SMTP (blocking: run it in a thread); returns (SMTP reply code, error or None, permanent)."""
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.delivery_timeout_s) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        return codes[0] if codes else None, f"SMTP refused every recipient: {sorted(exc.recipients)}", True
    except smtplib.SMTPResponseException as exc:
        # 5xx will not change by trying again (bad sender, bad auth, message refused); 4xx may.
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        return exc.smtp_code, f"SMTP {exc.smtp_code}: {text[:200]}", 500 <= exc.smtp_code < 600
    except (smtplib.SMTPException, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}", False
    if refused:
        # Others took it, so it is sent; the addresses turned down need fixing in the routing file.
        log.warning("email %s refused by the relay for %s", message["Message-ID"], sorted(refused))
    return 250, None, False
