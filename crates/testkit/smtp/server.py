# A real SMTP server for tests (aiosmtpd): authentication, STARTTLS or TLS from the first byte,
# a domain whose recipients are refused for good (550), and every accepted message appended to
# a JSON-lines file with its decoded parts. Prints `ready` once listening.
import argparse
import email
import email.policy
import json
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--auth")
parser.add_argument("--tls-cert")
parser.add_argument("--tls-key")
parser.add_argument("--implicit-tls", action="store_true")
parser.add_argument("--reject-domain")
parser.add_argument("--out", required=True)
args = parser.parse_args(sys.argv[1:])

user, password = (args.auth.split(":", 1) if args.auth else (None, None))


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user and auth_data.password.decode() == password
    return AuthResult(success=ok, auth_data=auth_data if ok else None)


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if args.reject_domain and address.lower().endswith("@" + args.reject_domain):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        plain = message.get_body(("plain",))
        html = message.get_body(("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["subject"] or ""),
            "from": str(message["from"] or ""),
            "to": str(message["to"] or ""),
            "message_id": str(message["message-id"] or ""),
            "text": plain.get_content() if plain else None,
            "html": html.get_content() if html else None,
            "data": raw.decode("utf-8", errors="replace"),
            "auth_user": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "tls": session.ssl is not None or args.implicit_tls,
        }
        with open(args.out, "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
            out.flush()
        return "250 Message accepted"


context = None
if args.tls_cert:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)

options = dict(hostname="127.0.0.1", port=args.port)
if args.auth:
    options.update(authenticator=authenticator, auth_required=True, auth_require_tls=context is not None and not args.implicit_tls)
if context is not None and args.implicit_tls:
    options.update(ssl_context=context)
elif context is not None:
    options.update(tls_context=context, require_starttls=True)

controller = Controller(Handler(), **options)
controller.start()
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
