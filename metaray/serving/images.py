"""Images over HTTP: base64-encoded PNG / JPEG / ... -> one grayscale (105, 105) drawing,
the size and ink-on-paper layout of the Omniglot images the prompt was meta-learned on.
Everything a client can get wrong is an `ImageError` naming it (the API's 422 / 413)."""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np

SIDE = 105  # Omniglot's drawings; the encoder resizes again to its own input
MAX_PIXELS = 4096 * 4096  # a small file may still decompress to a huge image
MODES = {"1": 1, "L": 1, "P": 1, "RGB": 3}  # accepted PIL modes -> channels
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # decoders a request may reach (never EPS, PDF, ...)


class ImageError(ValueError):
    """An image that cannot be used; `too_large` selects 413 over 422."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def decode_image(data: str, max_bytes: int) -> np.ndarray:
    """(SIDE, SIDE) uint8 from base64 image bytes; refuses what is not an image, over
    `max_bytes`, or not grayscale / RGB (an alpha channel, CMYK, 16-bit, ...)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) * 3 // 4 > max_bytes:
        raise ImageError(f"{len(data) * 3 // 4} bytes, over the limit of {max_bytes}", too_large=True)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageError(f"not base64 ({err})") from err
    try:
        with Image.open(io.BytesIO(raw), formats=FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(f"{image.width} x {image.height} pixels, over {MAX_PIXELS}", too_large=True)
            if image.mode not in MODES:
                bands = len(image.getbands())
                raise ImageError(f"{bands} channel(s) in mode {image.mode}; send grayscale (1 channel) or RGB (3)")
            gray = image.convert("L").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
            return np.asarray(gray, dtype=np.uint8)
    except ImageError:  # a ValueError too: already named
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(f"decompresses to too many pixels ({err})", too_large=True) from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        formats = f"; send {', '.join(FORMATS)}" if isinstance(err, UnidentifiedImageError) else ""
        raise ImageError(f"not a decodable image ({type(err).__name__}{formats})") from err


def encode_image(pixels: np.ndarray) -> str:
    """base64 PNG of a (H, W) uint8 array (clients, tests)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
