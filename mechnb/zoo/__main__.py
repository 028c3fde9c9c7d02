"""``python -m mechnb.zoo build [NAME ...]`` / ``python -m mechnb.zoo list`` (see :func:`mechnb.zoo.builder.main`)."""

from mechnb.zoo.builder import main

if __name__ == "__main__":
    raise SystemExit(main())
