"""The self-checkout screen (`shelfsight kiosk`): a web page served by the device, with the live
view, the top-3 products to tap, "none of these" with a catalog search, and taps that teach.

    options.py     KioskOptions
    live.py        the frame broadcaster: live view, answers, the frames a tap may name
    candidates.py  a recognition -> the three products shown; the catalog filter
    confirm.py     a tap -> one ``confirmed`` event (and a kept photo where the model was wrong)
    feedback.py    the feedback store on the device, and its export as a dataset
    teach.py       enough confirmed photos -> on-device enrolment (or the staff's review queue)
    station.py     the run loop, sinks, sync and the above, wired once
    app.py         the web server (aiohttp) and the shopper's routes; staff.py the staff page
    static/        the page: plain HTML, CSS and JavaScript, package data (no network needed)

The web server needs aiohttp (``pip install 'shelfsight[kiosk]'``); the rest does not.
"""
from shelfsight.lazy import lazy_exports

_EXPORTS = {"KioskOptions": "options", "KioskStation": "station", "FeedbackStore": "feedback",
            "Teacher": "teach", "Confirmations": "confirm", "ConfirmError": "confirm", "LiveView": "live",
            "make_app": "app", "serve": "app", "BackgroundServer": "app"}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
