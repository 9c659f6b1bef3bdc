"""The daemon and what it serves: signal intake, dispatch, HTTP API, OpenADR, metrics."""
