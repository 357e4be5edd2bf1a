#!/usr/bin/env python3
"""libtorrent side of scripts/bench-libtorrent.sh: make a torrent, seed it, or time one leecher.

Every session listens on 127.0.0.1 only, with DHT, LSD, UPnP and NAT-PMP off; peers are
added by address (connect_peer), so no tracker is involved. Results are key=value lines on
stdout; progress and errors go to stderr.

  create --file F --torrent T [--piece-kib K]     v1 torrent (SHA-1 pieces), K KiB pieces
                                                  (0 = libtorrent's default size); F may
                                                  be a directory (a multi-file torrent)
  seed   --torrent T --dir D --encryption E       prints "listening on 127.0.0.1:PORT" once
                                                  it seeds, then serves until killed
  leech  --torrent T --dir D --encryption E --peer HOST:PORT... [--timeout S]
                                                  times add_torrent until every piece is
                                                  downloaded and hash-checked, then fsyncs
                                                  every file
"""

import argparse
import os
import sys
import time

import libtorrent as lt

# The outcome of the MSE handshake per connection, from peer_info.flags.
RC4 = lt.peer_info.rc4_encrypted
OBFUSCATED = lt.peer_info.plaintext_encrypted


def log(msg):
    print(f"bench_libtorrent: {msg}", file=sys.stderr, flush=True)


def session(encryption):
    """A session on 127.0.0.1 (ephemeral port) with discovery off and the given pe policy."""
    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "outgoing_interfaces": "127.0.0.1",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_incoming_utp": False,
        "enable_outgoing_utp": False,
        "allow_multiple_connections_per_ip": True,
        "active_downloads": 100,
        "active_seeds": 100,
        "active_limit": 200,
        "active_checking": 100,
        "alert_mask": lt.alert.category_t.status_notification
        | lt.alert.category_t.error_notification
        | lt.alert.category_t.storage_notification,
    }
    if encryption == "forced":
        # RC4 on the whole stream, both ways; anything else is refused.
        settings.update(
            out_enc_policy=int(lt.enc_policy.pe_forced),
            in_enc_policy=int(lt.enc_policy.pe_forced),
            allowed_enc_level=int(lt.enc_level.pe_rc4),
            prefer_rc4=True,
        )
    elif encryption == "off":
        settings.update(
            out_enc_policy=int(lt.enc_policy.pe_disabled),
            in_enc_policy=int(lt.enc_policy.pe_disabled),
        )
    # "default": libtorrent's own policy (pe_enabled both ways, allowed_enc_level pe_both,
    # prefer_rc4 false), stated here so that the run does not depend on a changed default.
    else:
        settings.update(
            out_enc_policy=int(lt.enc_policy.pe_enabled),
            in_enc_policy=int(lt.enc_policy.pe_enabled),
            allowed_enc_level=int(lt.enc_level.pe_both),
            prefer_rc4=False,
        )
    return lt.session(settings)


def add(ses, torrent, save_path, have_all):
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = save_path
    # Not auto-managed: the queue (active_* limits) cannot hold it back.
    params.flags &= ~lt.torrent_flags.auto_managed
    params.flags &= ~lt.torrent_flags.paused
    if have_all:
        # Resume data saying every piece is there: the seeder trusts the file as our
        # seeders trust theirs after upload_file, with no re-hash at start.
        params.have_pieces = [True] * params.ti.num_pieces()
    return ses.add_torrent(params)


def wait(ses, done, timeout, what):
    """Reads alerts until done() is true; fails on a torrent error or after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            sys.exit(f"bench_libtorrent: timed out after {timeout} s waiting for {what}")
        ses.wait_for_alert(int(min(left, 1.0) * 1000) + 1)
        for alert in ses.pop_alerts():
            if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                sys.exit(f"bench_libtorrent: {alert.message()}")


def create(args):
    t0 = time.monotonic()
    if hasattr(lt, "list_files"):  # libtorrent 2.1
        files = lt.list_files(args.file)
    else:  # libtorrent 2.0
        files = lt.file_storage()
        lt.add_files(files, args.file)
    ct = lt.create_torrent(files, args.piece_kib * 1024, flags=lt.create_torrent.v1_only)
    ct.set_priv(True)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(args.file)))
    with open(args.torrent, "wb") as out:
        out.write(lt.bencode(ct.generate()))
    info = lt.torrent_info(args.torrent)
    print(f"torrent_create_seconds={time.monotonic() - t0:.3f}")
    print(f"piece_length_bytes={info.piece_length()}")
    print(f"num_pieces={info.num_pieces()}")


def seed(args):
    ses = session(args.encryption)
    handle = add(ses, args.torrent, args.dir, have_all=True)
    wait(ses, lambda: handle.status().is_seeding, 600, "the seeder to seed")
    print(f"listening on 127.0.0.1:{ses.listen_port()}", flush=True)
    while True:
        ses.wait_for_alert(60_000)
        for alert in ses.pop_alerts():
            if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                sys.exit(f"bench_libtorrent: seeder: {alert.message()}")


def leech(args):
    ses = session(args.encryption)
    t0 = time.monotonic()
    handle = add(ses, args.torrent, args.dir, have_all=False)
    for peer in args.peer:
        host, port = peer.rsplit(":", 1)
        handle.connect_peer((host, int(port)))
    # The encryption the connections negotiated, sampled while they transfer.
    seen = {"rc4": set(), "obfuscated_plaintext": set(), "plaintext": set()}

    def done():
        for p in handle.get_peer_info():
            kind = "rc4" if p.flags & RC4 else "obfuscated_plaintext" if p.flags & OBFUSCATED else "plaintext"
            seen[kind].add(p.ip)
        # is_finished: every wanted piece is downloaded and passed its SHA-1 check.
        return handle.status().is_finished

    wait(ses, done, args.timeout, "the download")
    t1 = time.monotonic()
    st = handle.status()
    info = handle.torrent_file()
    # The file, or the root directory of a multi-file torrent.
    path = os.path.join(args.dir, info.name())
    # Written pages may still be dirty (libtorrent 2 writes through mmap); flush them, as our
    # downloader fsyncs a finished file, and every file of a finished folder.
    # flush_cache only queues the flush (and, with many files, writes may still be queued
    # when every piece has passed its check): wait until libtorrent says it is done.
    flushed = []
    handle.flush_cache()
    deadline = time.monotonic() + args.timeout
    while not flushed:
        if time.monotonic() > deadline:
            sys.exit(f"bench_libtorrent: timed out after {args.timeout} s waiting for the flush")
        ses.wait_for_alert(1000)
        for alert in ses.pop_alerts():
            if isinstance(alert, (lt.torrent_error_alert, lt.file_error_alert)):
                sys.exit(f"bench_libtorrent: {alert.message()}")
            if isinstance(alert, lt.cache_flushed_alert):
                flushed.append(alert)
    files = info.layout() if hasattr(info, "layout") else info.files()  # 2.1, 2.0
    for i in range(files.num_files()):
        if files.file_flags(i) & files.flag_pad_file:
            continue
        fd = os.open(os.path.join(args.dir, files.file_path(i)), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    t2 = time.monotonic()
    print(f"download_seconds={t1 - t0:.3f}")
    print(f"download_fsync_seconds={t2 - t0:.3f}")
    print(f"connections={len(set().union(*seen.values()))}")
    for kind, peers in seen.items():
        print(f"connections_{kind}={len(peers)}")
    print(f"total_payload_download_bytes={st.total_payload_download}")
    print(f"file={path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("create")
    p.add_argument("--file", required=True)
    p.add_argument("--torrent", required=True)
    p.add_argument("--piece-kib", type=int, default=512)
    for name in ("seed", "leech"):
        p = sub.add_parser(name)
        p.add_argument("--torrent", required=True)
        p.add_argument("--dir", required=True)
        p.add_argument("--encryption", choices=("default", "forced", "off"), default="default")
        if name == "leech":
            p.add_argument("--peer", action="append", required=True)
            p.add_argument("--timeout", type=float, default=3600)
    sub.add_parser("version")
    args = parser.parse_args()
    if args.cmd == "version":
        print(lt.__version__)
    else:
        {"create": create, "seed": seed, "leech": leech}[args.cmd](args)


if __name__ == "__main__":
    main()
