"""The aiohttp application: WHIP, WHEP, JSON API, metrics, auth, CORS, error responses."""
