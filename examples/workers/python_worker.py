"""A Python worker: answers the parent, and whoever talks to it through a port it is given."""

from utility_process import parent_port

port = parent_port()
for message in port:
    for peer in message.ports:
        greeting = peer.recv()  # the JavaScript worker speaks first
        peer.post_message(f"hello back, I got {greeting.data!r}")
        peer.close()
    if not message.ports:
        port.post_message({"echo": message.data})
