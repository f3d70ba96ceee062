"""Sans-IO codecs (ttrpc framing, protobuf messages) and the thin asyncio transports on top."""
