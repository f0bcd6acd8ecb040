"""All-or-nothing writes of small files (configs, metrics, logs, tables,
figures, npz outputs): the new content goes to a temporary file beside the
target, reaches the disk, and only then takes the target's name, so a full
disk or a read-only folder leaves the previous file as it was. A failure is
an OSError naming the target."""
import io
import os
import tempfile


def write_bytes(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix='.',
                                   suffix='.' + os.path.basename(path))
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only
        os.replace(tmp, path)
    except OSError as e:
        if tmp and os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(e.errno, e.strerror, path) from None


def write_text(path, text):
    write_bytes(path, text.encode('utf-8'))


def in_memory(save):
    """The bytes that save(file) writes into a file object: Pillow's
    Image.save, matplotlib's savefig, numpy's savez. Writers like these
    given a real file leave half a file when the disk fills, and numpy's
    zip writer prints a traceback at exit; in memory they cannot fail so."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def write_with(path, save):
    """write_bytes(path, in_memory(save))."""
    write_bytes(path, in_memory(save))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
