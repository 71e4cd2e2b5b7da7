"""The list of files a command wrote, one line each (``deephoyer-tf``'s closing lines)."""

import pathlib


def print_written(files):
    """Prints the files a command wrote, one line each: path, size, what it holds.

    `files` is a list of ``(path, description)``; paths that do not exist
    are left out.
    """
    rows = [(pathlib.Path(path), text) for path, text in files if pathlib.Path(path).exists()]
    if not rows:
        return
    print("files written:")
    width = max(len(str(path)) for path, _ in rows)
    for path, text in rows:
        size = _size(path)
        print(f"  {str(path):<{width}}  {size:>9}  {text}")


def _size(path):
    if path.is_dir():
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    else:
        total = path.stat().st_size
    for unit in ("B", "KB", "MB", "GB"):
        if total < 1000 or unit == "GB":
            return f"{total:,.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1000.0
    return f"{total:.1f} GB"  # pragma: no cover
