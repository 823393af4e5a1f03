# A real SMTP server for tests (aiosmtpd): authentication, STARTTLS or TLS from the first byte,
# a domain whose recipients are refused for good (550), and every accepted message appended to
# a JSON-lines file with its decoded parts. Prints `ready` once listening, then runs until
# killed. Run as `python -c SCRIPT ARGS...`, so nothing here may rely on `__file__`.
import argparse
import email
import email.policy
import json
import logging
import ssl
import sys
import time
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

parser = argparse.ArgumentParser(prog="smtp-test-server")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--auth", metavar="USER:PASSWORD")
parser.add_argument("--tls-cert", metavar="FILE")
parser.add_argument("--tls-key", metavar="FILE")
parser.add_argument("--implicit-tls", action="store_true")
parser.add_argument("--reject-domain", metavar="DOMAIN")
parser.add_argument("--out", metavar="FILE", required=True)
args = parser.parse_args(sys.argv[1:])

if args.auth is not None and ":" not in args.auth:
    parser.error("--auth takes USER:PASSWORD")
if (args.tls_cert is None) != (args.tls_key is None):
    parser.error("--tls-cert and --tls-key go together")
if args.implicit_tls and args.tls_cert is None:
    parser.error("--implicit-tls needs --tls-cert and --tls-key")

# The password may contain ':'; the user may not.
user, password = args.auth.split(":", 1) if args.auth else (None, None)
reject_domain = "@" + args.reject_domain.lower() if args.reject_domain else None

# Noise aiosmtpd writes to stderr, none of it about the test: its warning about authentication
# over plain text (a Python warning and a log line per connection), which is what a test
# without TLS asks for, and the deprecation of `Session.login_data`, which its own AUTH code
# sets on every successful login.
warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
NOISE = ("but auth_require_tls == False", "Session.login_data is deprecated")
logging.getLogger("mail.log").addFilter(lambda record: not any(n in record.getMessage() for n in NOISE))


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == user.encode()
        and auth_data.password == password.encode()
    )
    if ok:
        return AuthResult(success=True, auth_data=auth_data)
    # `handled=False` makes aiosmtpd answer 535 itself; with its default (True) it would answer
    # nothing and the client would wait for a reply that never comes.
    return AuthResult(success=False, handled=False)


def parts(raw):
    """The headers and bodies a test looks at; what cannot be decoded is left out, the raw
    message is recorded anyway."""
    found = {"subject": "", "from": "", "to": "", "message_id": "", "text": None, "html": None}
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        for key, header in [("subject", "subject"), ("from", "from"), ("to", "to"), ("message_id", "message-id")]:
            found[key] = str(message[header] or "")
        for key, subtype in [("text", "plain"), ("html", "html")]:
            body = message.get_body((subtype,))
            found[key] = body.get_content() if body is not None else None
    except Exception as error:  # a malformed message is still accepted and recorded
        print(f"cannot decode a message's parts: {error!r}", file=sys.stderr, flush=True)
    return found


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if reject_domain and address.lower().endswith(reject_domain):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        auth = session.auth_data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            **parts(raw),
            "data": raw.decode("utf-8", errors="replace"),
            "auth_user": auth.login.decode("utf-8", errors="replace") if isinstance(auth, LoginPassword) else None,
            # aiosmtpd sets `session.ssl` after STARTTLS only; with implicit TLS every session is.
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

options = dict(
    hostname="127.0.0.1",
    port=args.port,
    # The name in the greeting; aiosmtpd would otherwise ask the resolver (socket.getfqdn()),
    # which can take seconds on a machine without DNS.
    server_hostname="localhost",
    # A busy machine (tests build and run in parallel) can be slow to answer the controller's
    # own probe connection; the caller waits 30 s for `ready` as well.
    ready_timeout=30.0,
)
if args.auth:
    # With STARTTLS, authentication only after it (the credentials never cross in clear). With
    # implicit TLS the whole connection is encrypted, but aiosmtpd only counts STARTTLS, so it
    # must not require it; without TLS there is nothing to require.
    options.update(
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=context is not None and not args.implicit_tls,
    )
if context is not None and args.implicit_tls:
    options.update(ssl_context=context)
elif context is not None:
    options.update(tls_context=context, require_starttls=True)

controller = Controller(Handler(), **options)
controller.start()  # raises (and the script exits without `ready`) when the port is taken
print("ready", flush=True)
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
