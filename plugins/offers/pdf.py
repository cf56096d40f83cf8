"""Tickets as PDF, one page each, rendered by the bridge from their barcodes with the venue's
template (``services.offers.options.pdf``): its title, logo, footer, the ticket fields printed
and the barcode symbology (QR or Code 128), with reportlab. S-360's own PDF is NOT FOUND as a
method (REFERENCE §h.5): a venue that has a URL for it sets ``pdf.url`` instead, a template of
``{order_id}`` and ``{movement_id}``, and the API redirects there.
"""

from __future__ import annotations

import io
import os
from decimal import Decimal

LABELS = {"product": "Product", "performance_id": "Performance", "seat_category_id":
          "Seat category", "seat": "Seat", "tariff_id": "Tariff", "price": "Price",
          "holder": "Holder", "movement_id": "Ticket"}
FIELDS = ("product", "performance_id", "seat_category_id", "seat", "tariff_id", "price",
          "holder")


class Unprintable(ValueError):
    """A ticket whose barcode the symbology cannot hold (too long, not ASCII for Code 128)."""


def check(template: dict) -> str | None:
    """What is wrong with a venue's template (None: nothing), checked at start-up."""
    if template.get("logo") and not os.path.isfile(template["logo"]):
        return f"pdf.logo: no file {template['logo']}"
    if template.get("url"):
        try:
            template["url"].format(order_id=1, movement_id=1)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            return f"pdf.url: only {{order_id}} and {{movement_id}} may be used ({exc!r})"
    return None


def render(tickets: list[dict], template: dict, currency: str | None) -> bytes:
    """The tickets' PDF: one A6 landscape page each; Unprintable for a barcode the symbology
    cannot hold."""
    from reportlab.graphics import renderPDF
    from reportlab.graphics.barcode import code128, qr
    from reportlab.graphics.shapes import Drawing
    from reportlab.lib.pagesizes import A6, landscape
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    width, height = landscape(A6)
    pdf = canvas.Canvas(out, pagesize=(width, height), invariant=1)
    pdf.setTitle(template.get("title", "Tickets"))
    for ticket in tickets:
        top = height - 28
        if template.get("logo"):
            pdf.drawImage(template["logo"], 14, top - 6, width=60, height=24,
                          preserveAspectRatio=True, mask="auto")
        pdf.setFont("Helvetica-Bold", 13)
        pdf.drawString(84 if template.get("logo") else 14, top, template.get("title", ""))
        pdf.setFont("Helvetica", 9)
        y = top - 24
        for name in template.get("fields", FIELDS):
            value = ticket.get(name)
            if value is None:
                continue
            if name == "price" and isinstance(value, int):  # S-360's thousandths
                value = f"{Decimal(value) / 1000:.2f} {currency or ''}".strip()
            pdf.drawString(14, y, f"{LABELS.get(name, name)}: {value}")
            y -= 13
        code = str(ticket.get("barcode") or "")
        if template.get("symbology", "qr") == "code128":
            if not code.isascii() or len(code) > 80:
                raise Unprintable(f"barcode {code[:40]!r} cannot be printed as Code 128")
            bar = code128.Code128(code, barHeight=40, barWidth=0.9)
            bar.drawOn(pdf, width - bar.width - 14, 30)
        else:
            if len(code.encode()) > 1000:
                raise Unprintable(f"barcode {code[:40]!r}… is too long for a QR code here")
            widget = qr.QrCodeWidget(code)
            x0, y0, x1, y1 = widget.getBounds()
            drawing = Drawing(110, 110, transform=[110 / (x1 - x0), 0, 0, 110 / (y1 - y0), 0, 0])
            drawing.add(widget)
            renderPDF.draw(drawing, pdf, width - 124, 30)
        pdf.setFont("Courier", 8)
        pdf.drawString(width - 200, 20, code)
        if template.get("footer"):
            pdf.setFont("Helvetica-Oblique", 7)
            pdf.drawString(14, 10, template["footer"])
        pdf.showPage()
    pdf.save()
    return out.getvalue()
