/* Power-loss simulation for the chaos harness (tests/chaos): an LD_PRELOAD shim that appends,
 * after every successful fsync/fdatasync, "S <size> <path>" to the file named by
 * $WARREN_CHAOS_SYNC_LOG, and after every successful rename "R <old>\t<new>". After a kill -9
 * the harness cuts every file of the node back to its last synced size (files created and never
 * synced are deleted), which is what a power loss does to data the kernel had not written yet. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int log_fd = -2;

static void log_line(const char *line, size_t len) {
    if (log_fd == -2) {
        const char *p = getenv("WARREN_CHAOS_SYNC_LOG");
        log_fd = p ? open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
    }
    if (log_fd >= 0) {
        ssize_t w = write(log_fd, line, len);
        (void)w;
    }
}

static void log_synced(int fd) {
    char link[64], path[PATH_MAX], line[PATH_MAX + 64];
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    int len = snprintf(line, sizeof line, "S %lld %s\n", (long long)st.st_size, path);
    if (len > 0 && (size_t)len < sizeof line) log_line(line, (size_t)len);
}

static void log_rename(const char *old, const char *new_) {
    char a[PATH_MAX], b[PATH_MAX], line[2 * PATH_MAX + 8];
    if (!realpath(new_, b)) return;
    if (old[0] == '/') {
        snprintf(a, sizeof a, "%s", old);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd)) return;
        snprintf(a, sizeof a, "%s/%s", cwd, old);
    }
    int len = snprintf(line, sizeof line, "R %s\t%s\n", a, b);
    if (len > 0 && (size_t)len < sizeof line) log_line(line, (size_t)len);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int r = real(fd);
    if (r == 0) log_synced(fd);
    return r;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int r = real(fd);
    if (r == 0) log_synced(fd);
    return r;
}

int rename(const char *old, const char *new_) {
    static int (*real)(const char *, const char *);
    if (!real) real = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int r = real(old, new_);
    if (r == 0) log_rename(old, new_);
    return r;
}
