"""The TLS checks' recording proxy: the guest reaches the server's TLS listener through it, and
it keeps every byte that crossed, both ways, for the check that nothing is in the clear."""
import socket
import threading


class Recorder:
    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.up, self.down = bytearray(), bytearray()
        self.connections = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target, timeout=10)
                server.settimeout(None)
            except OSError:
                continue
            self.connections += 1
            for src, dst, buf in ((client, server, self.up), (server, client, self.down)):
                threading.Thread(target=self.pump, args=(src, dst, buf), daemon=True).start()

    def pump(self, src, dst, buf):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                with self.lock:
                    buf.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def captured(self):
        with self.lock:
            return bytes(self.up), bytes(self.down)


def start(target_port):
    return Recorder(target_port)
