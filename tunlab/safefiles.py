"""Files written for a person, never through somebody else's links, and files read with the
rights of the person who ran ``sudo``.

Root (``sudo tunlab lab``, ``make lab``) writing a course into a folder a local user prepared
must not let that user choose what gets written where: a symlink named like a lesson would
otherwise make root overwrite any file, or create a new root-owned one anywhere. So a folder is
opened once, component by component without following links that neither root nor the caller
owns, checked (owner, no write access for others), and every file in it is then reached through
that folder's descriptor: read with ``O_NOFOLLOW``, written to a new temporary file
(``O_EXCL``) that is renamed over the name, so an existing link or hard link is replaced and
never written through.

:func:`read_as_invoker` reads a file a command was given (``--nft-file``) with the rights of the
user who ran ``sudo`` (``SUDO_UID``), so that ``sudo tunlab`` does not read, and then echo,
what only root may read.

Only :mod:`tunlab.errors` is imported: this is a base module.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import secrets
import stat
from pathlib import Path

from tunlab.errors import TunlabError

__all__ = ["invoking_uid", "MAX_READ", "open_folder", "own_uids", "read_as_invoker", "SafeDir",
           "trusted_uids", "user_name"]

MAX_READ = 64 * 1024 * 1024
"""The largest file read whole (a lesson with outputs is a few MB)."""
_MAX_LINKS = 40  # symlinks followed in one path, as the kernel's own limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def invoking_uid() -> int | None:
    """The uid of the user who ran ``sudo`` when this process is root through sudo, else None.

    sudo sets ``SUDO_UID`` itself (a user cannot pass their own through sudo's environment
    filter); a process that is not root cannot gain anything by setting it.
    """
    if os.geteuid() != 0:
        return None
    value = os.environ.get("SUDO_UID", "")
    return int(value) if value.isdigit() and int(value) != 0 else None


def trusted_uids() -> frozenset[int]:
    """Whose links a write may go through: the caller, root, the sudo user."""
    return own_uids() | {0}


def own_uids() -> frozenset[int]:
    """Whose folders a command fills without being told: the caller's, the sudo user's."""
    invoker = invoking_uid()
    return frozenset({os.geteuid()} | ({invoker} if invoker is not None else set()))


def user_name(uid: int) -> str:
    """A user's name for messages (the number when the account is unknown)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _private_group(uid: int, gid: int) -> bool:
    """True for a user private group (Debian's and Ubuntu's per-user group) of ``uid``."""
    try:
        user, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return (user.pw_gid == gid and group.gr_name == user.pw_name
            and set(group.gr_mem) <= {user.pw_name})


def _name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or "\0" in name:
        raise ValueError(f"{name!r} is not one file name")
    return name


class SafeDir:
    """A folder held open by descriptor; its files are read and replaced without following links.

    New files and folders are made by the caller; when root writes into a folder another user
    owns (named explicitly, see :func:`open_folder`), they are given to that user, who could not
    edit them otherwise.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        info = os.fstat(fd)
        self.uid, self.gid = info.st_uid, info.st_gid

    def __enter__(self) -> SafeDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder's descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry ``name`` itself (a link is not followed); None when there is none."""
        try:
            return os.stat(_name(name), dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def check_file(self, name: str) -> bool:
        """True if ``name`` is a file :meth:`read` will accept, False if absent; else refuse.

        For checking every name before the first write, so a refusal changes nothing.
        """
        info = self.lstat(name)
        if info is None:
            return False
        self._check_entry(name, info)
        return True

    def _check_entry(self, name: str, info: os.stat_result) -> None:
        where = self.path / name
        if stat.S_ISLNK(info.st_mode):
            raise TunlabError(f"{where} is a symbolic link; tunlab never writes or reads "
                              "through links in the folder it fills",
                              f"remove it (`rm {where}`) or use a folder of your own")
        if not stat.S_ISREG(info.st_mode):
            raise TunlabError(f"{where} is not a regular file",
                              "move it away or use another folder")
        if info.st_uid not in (self.uid, os.geteuid()) or \
                (info.st_uid != self.uid and info.st_nlink > 1):
            # a hard link to a file of someone else: reading it (and backing it up into this
            # folder) would hand that file to the folder's owner
            raise TunlabError(f"{where} belongs to {user_name(info.st_uid)}, not to the "
                              f"folder's owner {user_name(self.uid)}",
                              f"remove it (`rm {where}`) or use a folder of your own")

    def read(self, name: str, limit: int = MAX_READ) -> bytes | None:
        """The bytes of the regular file ``name``, None when it does not exist.

        Refuses (TunlabError) a link, anything but a regular file, a file of another user
        than the folder's owner or the caller, and a file larger than ``limit``.
        """
        try:
            fd = os.open(_name(name), _READ_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._check_entry(name, os.stat(name, dir_fd=self.fd, follow_symlinks=False))
            raise TunlabError(f"cannot read {self.path / name}: {exc.strerror}",
                              "check the folder's files") from exc
        try:
            info = os.fstat(fd)
            self._check_entry(name, info)
            return _read_all(fd, limit, self.path / name)
        finally:
            os.close(fd)

    def replace(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Make ``name`` hold ``data``: a new file, renamed over whatever entry was there."""
        temporary = self._new_file(f".{_name(name)}.{secrets.token_hex(6)}.tmp", data, mode)
        try:
            os.rename(temporary, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except OSError as exc:
            os.unlink(temporary, dir_fd=self.fd)
            raise TunlabError(f"cannot write {self.path / name}: {exc.strerror}",
                              "check that it is a file, not a folder") from exc

    def create(self, name: str, data: bytes, mode: int = 0o644) -> bool:
        """Create the new file ``name`` with ``data``; False (nothing written) if it exists."""
        try:
            self._new_file(_name(name), data, mode)
        except FileExistsError:
            return False
        return True

    def _new_file(self, name: str, data: bytes, mode: int) -> str:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, mode, dir_fd=self.fd)
        except FileExistsError:
            raise
        except OSError as exc:
            raise TunlabError(f"cannot write in {self.path}: {exc.strerror}",
                              "use a folder you may write to") from exc
        try:
            self._give(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(name, dir_fd=self.fd)
            raise
        os.close(fd)
        return name

    def _give(self, fd: int) -> None:
        if os.geteuid() == 0 and self.uid != 0:
            os.fchown(fd, self.uid, self.gid)

    def folder(self, name: str) -> SafeDir:
        """The sub-folder ``name`` (made if missing), held open and checked like this one."""
        try:
            os.mkdir(_name(name), 0o755, dir_fd=self.fd)
            made = True
        except FileExistsError:
            made = False
        except OSError as exc:
            raise TunlabError(f"cannot make {self.path / name}: {exc.strerror}",
                              "use a folder you may write to") from exc
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            raise TunlabError(f"{self.path / name} is not a folder (or is a link)",
                              "remove it or use another folder") from exc
        if made:
            self._give(fd)
        sub = SafeDir(fd, self.path / name)
        try:
            _check_folder(sub, frozenset({self.uid, os.geteuid()}), foreign_ok=False)
        except BaseException:
            sub.close()
            raise
        return sub


def _read_all(fd: int, limit: int, where: object) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise TunlabError(f"{where} is larger than {limit} bytes", "give a smaller file")
        chunks.append(chunk)


def _walk(path: Path, create: bool, trusted: frozenset[int]) -> int:
    """A descriptor of the folder ``path``, resolved one component at a time.

    A symlink on the way is followed only when root, the caller or the sudo user owns it (a
    link of anyone else could point the write anywhere); missing folders are made when
    ``create``. Every step holds the folder it stands in, so nothing can be swapped under it.
    """
    parts = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    try:
        while parts:
            name = parts.pop()
            if name in ("", "."):
                continue
            try:
                step = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise TunlabError(f"{path} does not exist", "name an existing folder") \
                        from None
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile: opened and checked like any other
                except OSError as exc:
                    raise TunlabError(f"cannot make {path}: {exc.strerror}",
                                      "name a folder in a place you may write to") from None
                parts.append(name)
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise TunlabError(f"cannot open {path}: {exc.strerror}",
                                      "name a folder you may write to") from exc
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(info.st_mode):
                    raise TunlabError(f"{path} exists and is not a folder",
                                      "name a folder (new or one made by `tunlab notebooks`)"
                                      ) from None
                if info.st_uid not in trusted:
                    raise TunlabError(f"{path} leads through a symbolic link ({name}) owned by "
                                      f"{user_name(info.st_uid)}",
                                      "give the real path, or a folder of your own") from None
                links += 1
                if links > _MAX_LINKS:
                    raise TunlabError(f"{path}: too many symbolic links",
                                      "give the real path") from None
                target = os.readlink(name, dir_fd=fd)
                parts.extend(reversed(Path(target).parts))
                if target.startswith("/"):
                    parts.pop()  # the "/" itself
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                continue
            os.close(fd)
            fd = step
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_folder(folder: SafeDir, owners: frozenset[int], foreign_ok: bool) -> None:
    info = os.fstat(folder.fd)
    if info.st_uid not in owners and not foreign_ok:
        raise TunlabError(f"{folder.path} belongs to {user_name(info.st_uid)}, not to you",
                          "use a folder of your own (a new one is made for you); as root, "
                          "name another user's folder explicitly to fill it for them")
    if info.st_mode & stat.S_IWOTH or (info.st_mode & stat.S_IWGRP
                                       and not _private_group(info.st_uid, info.st_gid)):
        raise TunlabError(f"{folder.path} may be written by other users (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}), who could swap its files "
                          "for links while tunlab writes",
                          f"`chmod go-w {folder.path}`, or use a folder of your own")


def open_folder(path: Path | str, *, create: bool = True, foreign_ok: bool = False) -> SafeDir:
    """Open (making it if ``create``) the folder a command will fill, and check it is safe.

    Refused with a TunlabError: a folder owned by anyone but the caller or the user who ran
    sudo (unless ``foreign_ok``: root filling a folder it was explicitly given for another
    user), a folder that group or others may write (a user private group aside), and a path
    through a symlink owned by anyone but them and root.
    """
    path = Path(path)
    folder = SafeDir(_walk(path, create, trusted_uids()), path)
    try:
        _check_folder(folder, own_uids(), foreign_ok and os.geteuid() == 0)
    except BaseException:
        folder.close()
        raise
    return folder


def read_as_invoker(path: str | os.PathLike[str], limit: int = MAX_READ) -> bytes:
    """The bytes of the regular file ``path``, opened with the rights of the user who ran sudo.

    Without sudo (or as root by itself) it is opened with this process's own rights. A user
    who may not read the file gets a TunlabError and nothing of its contents, so ``sudo
    tunlab fate --nft-file /etc/shadow`` cannot make nft echo root's secrets.
    """
    uid = invoking_uid()
    if uid is None:
        fd = _open_regular(os.fspath(path))
        try:
            return _read_all(fd, limit, path)
        finally:
            os.close(fd)
    return _read_in_child(os.fspath(path), uid, limit)


def _open_regular(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise TunlabError(f"cannot read {path}: {exc.strerror}", "give a file you may read") \
            from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TunlabError(f"{path} is not a regular file", "give a file")
    return fd


def _read_in_child(path: str, uid: int, limit: int) -> bytes:
    """Open and read ``path`` in a child that has become ``uid``; its bytes come back by pipe.

    A child, not a temporary seteuid: the change of identity then cannot leak into this
    process, whatever its other threads do.
    """
    try:
        account = pwd.getpwuid(uid)
        gid, groups = account.pw_gid, os.getgrouplist(account.pw_name, account.pw_gid)
    except KeyError:
        gid = int(os.environ.get("SUDO_GID", "65534") or 65534)
        groups = [gid]
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            os.close(reader)
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            fd = _open_regular(path)
            data = _read_all(fd, limit, path)
            os.write(writer, b"\0")
            view = memoryview(data)
            while view:
                view = view[os.write(writer, view):]
            status = 0
        except TunlabError as exc:
            os.write(writer, b"\1" + str(exc.message).encode(errors="replace")[:500])
        except BaseException:
            pass
        finally:
            os._exit(status)
    os.close(writer)
    try:
        chunks = []
        while chunk := os.read(reader, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
    answer = b"".join(chunks)
    who = user_name(uid)
    if answer[:1] == b"\0":
        return answer[1:]
    reason = answer[1:].decode(errors="replace") if answer else f"cannot read {path}"
    raise TunlabError(f"{reason} (read as {who}, the user who ran sudo)",
                      f"give a file that {who} may read: sudo does not let tunlab read "
                      "files for you")
