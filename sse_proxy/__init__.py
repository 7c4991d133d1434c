"""Redis Streams to Server-Sent Events: one reader per stream, exact resume, JWT authorization."""
