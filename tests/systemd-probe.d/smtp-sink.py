#!/usr/bin/python3
"""A minimal SMTP server for the systemd probe: 127.0.0.1:PORT, no TLS, accepts everything and
stores each message as DIR/N.eml. Standard library only (the probe's rootfs has no aiosmtpd)."""
import asyncio
import sys
from pathlib import Path


async def session(reader, writer, store, counter):
    async def reply(line):
        writer.write(line.encode() + b"\r\n")
        await writer.drain()

    await reply("220 probe ESMTP")
    while line := await reader.readline():
        verb = line.decode(errors="replace").strip().split(" ", 1)[0].upper()
        if verb in ("EHLO", "HELO"):
            await reply("250 probe")
        elif verb == "DATA":
            await reply("354 go on")
            data = bytearray()
            while (chunk := await reader.readline()) not in (b".\r\n", b""):
                data += chunk[1:] if chunk.startswith(b"..") else chunk
            counter[0] += 1
            (store / f"{counter[0]:03d}.eml").write_bytes(bytes(data))
            await reply("250 queued")
        elif verb == "QUIT":
            await reply("221 bye")
            break
        else:
            await reply("250 ok")
    writer.close()


async def main(port, store):
    counter = [0]
    server = await asyncio.start_server(lambda r, w: session(r, w, store, counter), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
