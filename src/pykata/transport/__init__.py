"""asyncio loops around the sans-IO protocol codecs (ttrpc client and server)."""
