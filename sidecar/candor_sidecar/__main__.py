"""`python -m candor_sidecar`: the same as `candor sidecar`."""

from candor_sidecar.no_openssl import keep_openssl_out

if __name__ == "__main__":
    keep_openssl_out()  # before any other module of Candor's loads asyncio or hashlib
    from candor_sidecar.cli import main

    main(prog="python -m candor_sidecar")
