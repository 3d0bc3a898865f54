"""A real SMTP server for the notification tests (aiosmtpd, Debian's /usr/bin/python3).

usage: smtp_server.py PORT OUTDIR [USER PASSWORD]

Recipients starting with "bounce" are refused (550). Every accepted mail is written to OUTDIR as <n>.eml (raw) and <n>.json (envelope,
decoded subject, text part). With USER and PASSWORD, AUTH (PLAIN/LOGIN, without TLS)
is required and only that pair is accepted; attempts are appended to OUTDIR/auth.log.
"""
import email
import email.policy
import json
import logging
import os
import signal
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

# aiosmtpd warns about AUTH without TLS, which is what these tests want: keep quiet.
warnings.filterwarnings("ignore")
logging.getLogger("mail.log").setLevel(logging.ERROR)

port = int(sys.argv[1])
outdir = sys.argv[2]
user = sys.argv[3] if len(sys.argv) > 4 else None
password = sys.argv[4] if len(sys.argv) > 4 else None
os.makedirs(outdir, exist_ok=True)


def login_of(session):
    data = getattr(session, "auth_data", None)
    login = getattr(data, "login", None)
    return login.decode() if isinstance(login, bytes) else login


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        # Addresses starting with "bounce" do not exist.
        if address.startswith("bounce"):
            return "550 5.1.1 <%s>: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        n = time.time_ns()
        raw = envelope.original_content or envelope.content
        with open(os.path.join(outdir, f"{n}.eml"), "wb") as f:
            f.write(raw)
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        summary = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(msg["subject"]),
            "to": str(msg["to"]),
            "message_id": str(msg["message-id"]),
            "text": text.get_content() if text is not None else None,
            "html": html.get_content() if html is not None else None,
            "login": login_of(session),
        }
        tmp = os.path.join(outdir, f"{n}.json.tmp")
        with open(tmp, "w") as f:
            json.dump(summary, f)
        os.rename(tmp, os.path.join(outdir, f"{n}.json"))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login.decode() == user
        and auth_data.password.decode() == password
    )
    with open(os.path.join(outdir, "auth.log"), "a") as f:
        login = auth_data.login.decode() if isinstance(auth_data, LoginPassword) else "?"
        f.write(f"{mechanism} {login} {'ok' if ok else 'refused'}\n")
    # handled=False: aiosmtpd answers 535 itself on failure.
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


kwargs = {}
if user is not None:
    kwargs = dict(authenticator=authenticator, auth_require_tls=False, auth_required=True)
controller = Controller(Handler(), hostname="127.0.0.1", port=port, **kwargs)
controller.start()
signal.signal(signal.SIGTERM, lambda *_: (controller.stop(), sys.exit(0)))
while True:
    signal.pause()
