"""Tar archives from outside, and an image folder given as one.

Every member is checked (no absolute names, no `..`, no links or devices)
before anything is read or written. `--data images.tar.gz` is unpacked
once into --data-dir, atomically: into a temporary folder beside the
target that takes the target's name only when complete, so an interrupted
unpacking never passes for a finished one.
"""
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zlib

from .errors import DataError

SUFFIXES = ('.tar.gz', '.tgz', '.tar')
# In an unpacked folder: the sha256 of the archive it came from, so a
# changed archive is not silently read as its old copy.
_SOURCE = '.unpacked-from'


def check_member(member, tar_path):
    """Refuse what could write or point outside the destination: absolute
    names, `..` components, links, devices and fifos."""
    name = member.name
    parts = re.split(r'[/\\]', name)
    if (name.startswith(('/', '\\')) or re.match(r'^[A-Za-z]:', name)
            or '..' in parts):
        raise DataError('refusing %s: member %r has an unsafe path'
                        % (tar_path, name))
    if not (member.isfile() or member.isdir()):
        raise DataError('refusing %s: member %r is a link or special file'
                        % (tar_path, name))


def tar_error(tar_path, error):
    return DataError('%s is not a readable tar.gz archive (%s: %s); it may be '
                     'truncated or corrupt' % (tar_path, type(error).__name__,
                                               error))


# Errors tarfile/gzip raise on a truncated or corrupt stream.
TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


def _unpack(tar_path, dest, marker):
    """Members of `tar_path` into a new folder `dest`, all or nothing,
    with `marker` in it as _SOURCE."""
    try:
        tar = tarfile.open(tar_path, 'r:*')
    except TAR_ERRORS as e:
        raise tar_error(tar_path, e)
    with tar:
        try:
            members = tar.getmembers()
        except TAR_ERRORS as e:
            raise tar_error(tar_path, e)
        for member in members:
            check_member(member, tar_path)
        parent = os.path.dirname(os.path.abspath(dest))
        tmp = None
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = tempfile.mkdtemp(dir=parent, prefix='.%s.partial-'
                                   % os.path.basename(dest))
            if hasattr(tarfile, 'data_filter'):
                # Python >= 3.11.4 also drops setuid bits and odd modes.
                tar.extractall(tmp, members=members, filter='data')
            else:
                tar.extractall(tmp, members=members)
            with open(os.path.join(tmp, _SOURCE), 'w') as f:
                f.write(marker + '\n')
            os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only
            os.rename(tmp, dest)
        except TAR_ERRORS as e:
            raise DataError('could not unpack %s into %s (%s: %s)'
                            % (tar_path, dest, type(e).__name__, e))
        finally:
            if tmp and os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def is_archive(path):
    return strip_suffix(path) != path


def strip_suffix(name):
    """'cifar10-jpeg.tar.gz' -> 'cifar10-jpeg'; other names unchanged."""
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return name


def _sha256(path):
    try:
        with open(path, 'rb') as f:
            return hashlib.file_digest(f, 'sha256').hexdigest()
    except OSError as e:
        raise DataError('cannot read %s (%s)' % (path, e.strerror or e))


def unpacked_image_folder(tar_path, data_dir):
    """The image folder inside `tar_path`, unpacked into
    data_dir/<archive name without .tar.gz> the first time and read from
    there afterwards, as long as the archive is unchanged (its sha256)."""
    if not os.path.isfile(tar_path):
        raise DataError('no archive at %s' % os.path.abspath(tar_path))
    dest = os.path.join(os.path.expanduser(data_dir),
                        strip_suffix(os.path.basename(tar_path)))
    digest = _sha256(tar_path)
    if not os.path.lexists(dest):
        try:
            _unpack(tar_path, dest, digest)
        except DataError:
            # Tasks of a job array may unpack at once: the first to finish
            # names the copy, the others then read it.
            if not os.path.lexists(dest):
                raise
    try:
        with open(os.path.join(dest, _SOURCE)) as f:
            unpacked_from = f.read().strip()
    except OSError:
        unpacked_from = None
    if unpacked_from != digest:
        raise DataError('%s exists but is not an unpacked copy of %s; '
                        'remove it or give another --data-dir'
                        % (dest, tar_path))
    return _image_root(dest)


def _image_root(dest):
    """`dest`, or the one folder it holds if the archive packed the image
    folder inside a top-level folder (as cifar10-jpeg.tar.gz does)."""
    tops = [n for n in os.listdir(dest) if not n.startswith('.')]
    if os.path.isdir(os.path.join(dest, 'train')) or len(tops) != 1:
        return dest
    top = os.path.join(dest, tops[0])
    return top if os.path.isdir(top) else dest
