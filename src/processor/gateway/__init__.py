"""`processor gateway`: live positions and domain changes pushed to browsers (WebSocket, SSE)."""
