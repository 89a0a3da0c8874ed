"""Why the relay refused an offer; the server turns each into an HTTP problem."""


class OfferRejected(Exception):
    """Base of every refusal; the message is meant for the client."""


class InvalidOffer(OfferRejected):
    """The SDP cannot be parsed or breaks the rules of SDP/JSEP."""


class UnsupportedOffer(OfferRejected):
    """A valid offer the relay cannot serve, such as one lacking the studio's codec."""


class StudioOffline(OfferRejected):
    """A viewer asked for a studio that is not publishing now."""
