"""The unlock agent (docs/AGENT.md): a per-user process that holds unlocked containers and
does their private-key work inside itself.  protocol.py is the wire format and the socket's
place, server.py the agent process, client.py the Provider that talks to it."""
