"""Read a VNC server's whole screen once, as a viewer does, and save it as PPM: ``python3 rfb_view.py OUT [SERVER]``.

A minimal RFB 3.8 client with the Python standard library alone, so that it runs in the osworld-vm container
(whose python3 is websockify's), against QEMU's VNC server on the unix socket /run/vm/vnc.sock (SERVER: a
socket's path, or HOST:PORT): the same server noVNC on port 8006 shows. No authentication (QEMU's ``-vnc`` without a password offers "None"), 32-bit true colour,
raw encoding, one full (non-incremental) update.
"""

import socket
import struct
import sys


def receive(sock: socket.socket, count: int) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError("the VNC server closed the connection")
        data += chunk
    return bytes(data)


def connect(server: str) -> socket.socket:
    if server.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(server)
        return sock
    host, _, port = server.partition(":")
    return socket.create_connection((host, int(port)), timeout=30)


def read_screen(server: str) -> tuple[int, int, bytes]:
    """The server's screen as (width, height, RGB rows)."""
    sock = connect(server)
    receive(sock, 12)  # the server's protocol version
    sock.sendall(b"RFB 003.008\n")
    security_types = receive(sock, receive(sock, 1)[0])
    if 1 not in security_types:
        raise SystemExit(f"the VNC server asks for authentication (security types {list(security_types)})")
    sock.sendall(b"\x01")
    if struct.unpack(">I", receive(sock, 4))[0] != 0:
        raise SystemExit("the VNC server refused the connection")
    sock.sendall(b"\x01")  # ClientInit: share the desktop
    width, height = struct.unpack(">HH", receive(sock, 4))
    receive(sock, 16)  # the server's pixel format: replaced below
    receive(sock, struct.unpack(">I", receive(sock, 4))[0])  # the desktop's name
    # SetPixelFormat: 32 bits per pixel, depth 24, little-endian, true colour, red at bit 16, green 8, blue 0
    sock.sendall(struct.pack(">B3xBBBBHHHBBB3x", 0, 32, 24, 0, 1, 255, 255, 255, 16, 8, 0))
    sock.sendall(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw only
    sock.sendall(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # FramebufferUpdateRequest, the whole screen
    pixels = bytearray(width * height * 4)
    covered = 0
    while covered < width * height:
        message = receive(sock, 2)[0]
        if message != 0:
            raise SystemExit(f"unexpected VNC server message {message}")
        for _ in range(struct.unpack(">H", receive(sock, 2))[0]):
            x, y, w, h, encoding = struct.unpack(">HHHHi", receive(sock, 12))
            if encoding != 0:
                raise SystemExit(f"unexpected VNC encoding {encoding}")
            data = receive(sock, w * h * 4)
            for row in range(h):
                start = ((y + row) * width + x) * 4
                pixels[start:start + w * 4] = data[row * w * 4:(row + 1) * w * 4]
            covered += w * h
    sock.close()
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = pixels[2::4], pixels[1::4], pixels[0::4]  # bytes B, G, R, unused
    return width, height, bytes(rgb)


if __name__ == "__main__":
    width, height, rgb = read_screen(sys.argv[2] if len(sys.argv) > 2 else "/run/vm/vnc.sock")
    with open(sys.argv[1], "wb") as out:
        out.write(b"P6\n%d %d\n255\n" % (width, height) + rgb)
