/* Fault injection for the bot's own process (LD_PRELOAD), built by the tests with `cc -shared -fPIC`.
 *
 * While the file named by FAULT_CONTROL exists, each of its lines `<op> <errno> <pattern>` makes the
 * calls of <op> on a matching path fail with that errno:
 *   op:      fsync (fsync, fdatasync), write, rename (rename, renameat, renameat2: old or new path),
 *            link (link, linkat: either path), truncate (ftruncate)
 *   errno:   EIO, ENOSPC or EDQUOT
 *   pattern: a substring of the path, or =PATH for exactly that path (e.g. a directory's own fsync).
 * A descriptor's path is read from /proc/self/fd. Remove the control file and the calls work again. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int rule_errno(const char *name) {
    if (strcmp(name, "ENOSPC") == 0) return ENOSPC;
    if (strcmp(name, "EDQUOT") == 0) return EDQUOT;
    return EIO;
}

/* The errno to fail `op` on `path` with, or 0. */
static int should_fail(const char *op, const char *path) {
    const char *control = getenv("FAULT_CONTROL");
    if (control == NULL || path == NULL) return 0;
    int saved = errno;
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { errno = saved; return 0; }
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    errno = saved;
    if (n <= 0) return 0;
    buf[n] = '\0';
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char rop[32], rerr[32], pattern[2048];
        if (sscanf(line, "%31s %31s %2047s", rop, rerr, pattern) != 3) continue;
        if (strcmp(rop, op) != 0) continue;
        int match = pattern[0] == '=' ? strcmp(path, pattern + 1) == 0 : strstr(path, pattern) != NULL;
        if (match) return rule_errno(rerr);
    }
    return 0;
}

static int fd_fails(const char *op, int fd) {
    if (getenv("FAULT_CONTROL") == NULL) return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    int saved = errno;
    ssize_t n = readlink(link, path, sizeof path - 1);
    errno = saved;
    if (n <= 0) return 0;
    path[n] = '\0';
    return should_fail(op, path);
}

#define REAL(ret, name, ...) \
    static ret (*real)(__VA_ARGS__) = NULL; \
    if (real == NULL) real = (ret (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name)

int fsync(int fd) {
    REAL(int, "fsync", int);
    int e = fd_fails("fsync", fd);
    if (e) { errno = e; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    REAL(int, "fdatasync", int);
    int e = fd_fails("fsync", fd);
    if (e) { errno = e; return -1; }
    return real(fd);
}

ssize_t write(int fd, const void *buf, size_t count) {
    REAL(ssize_t, "write", int, const void *, size_t);
    /* Never the standard streams: the bot's log must get through. */
    if (fd > 2) {
        int e = fd_fails("write", fd);
        if (e) { errno = e; return -1; }
    }
    return real(fd, buf, count);
}

int ftruncate(int fd, off_t length) {
    REAL(int, "ftruncate", int, off_t);
    int e = fd_fails("truncate", fd);
    if (e) { errno = e; return -1; }
    return real(fd, length);
}

int ftruncate64(int fd, off_t length) {
    REAL(int, "ftruncate64", int, off_t);
    int e = fd_fails("truncate", fd);
    if (e) { errno = e; return -1; }
    return real(fd, length);
}

int rename(const char *old, const char *new) {
    REAL(int, "rename", const char *, const char *);
    int e = should_fail("rename", old);
    if (!e) e = should_fail("rename", new);
    if (e) { errno = e; return -1; }
    return real(old, new);
}

int renameat(int olddir, const char *old, int newdir, const char *new) {
    REAL(int, "renameat", int, const char *, int, const char *);
    int e = should_fail("rename", old);
    if (!e) e = should_fail("rename", new);
    if (e) { errno = e; return -1; }
    return real(olddir, old, newdir, new);
}

int renameat2(int olddir, const char *old, int newdir, const char *new, unsigned int flags) {
    REAL(int, "renameat2", int, const char *, int, const char *, unsigned int);
    int e = should_fail("rename", old);
    if (!e) e = should_fail("rename", new);
    if (e) { errno = e; return -1; }
    return real(olddir, old, newdir, new, flags);
}

int link(const char *old, const char *new) {
    REAL(int, "link", const char *, const char *);
    int e = should_fail("link", old);
    if (!e) e = should_fail("link", new);
    if (e) { errno = e; return -1; }
    return real(old, new);
}

int linkat(int olddir, const char *old, int newdir, const char *new, int flags) {
    REAL(int, "linkat", int, const char *, int, const char *, int);
    int e = should_fail("link", old);
    if (!e) e = should_fail("link", new);
    if (e) { errno = e; return -1; }
    return real(olddir, old, newdir, new, flags);
}
