"""``python -m ingress_smtpd``: the SMTP server role (Postfix smtpd + cleanup)."""

from ingress_smtpd.server import main
from postbus.service import run

if __name__ == "__main__":
    run("smtpd", main)
