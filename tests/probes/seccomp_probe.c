/* Probe for hermetic's seccomp tests: makes the system calls the profile
 * rules on and prints what each returned, as key=value lines. Built static,
 * 64-bit and 32-bit (gcc -m32 -static), and run as a sandbox's builder. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#define NEW_USER_NAMESPACE 0x10000000
#define NR_FCHMODAT2 452
#define NR_IO_URING_SETUP 425
#define NR_CLONE3 435
#define NR_MOUNT_SETATTR 442

static const char *result(long value) {
    if (value >= 0)
        return "ok";
    switch (errno) {
    case EPERM: return "EPERM";
    case ENOSYS: return "ENOSYS";
    case ENOTSUP: return "ENOTSUP";
    case EINVAL: return "EINVAL";
    case EFAULT: return "EFAULT";
    case EACCES: return "EACCES";
    default: return strerror(errno);
    }
}

/* Starts a child that exits at once; returns the call's result. */
static const char *spawn(long pid) {
    if (pid == 0)
        _exit(0);
    const char *text = result(pid);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return text;
}

int main(void) {
    const char *file = "probe-target";
    int fd = open(file, O_CREAT | O_RDWR, 0644);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    struct utsname name;
    uname(&name);
    printf("machine=%s\n", name.machine);
    printf("pointer_bits=%zu\n", sizeof(void *) * 8);

    static const int modes[] = {04755, 02755, 01777, 0755};
    for (unsigned i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        int mode = modes[i];
        printf("chmod_%o=%s\n", mode, result(syscall(SYS_chmod, file, mode)));
        printf("fchmod_%o=%s\n", mode, result(syscall(SYS_fchmod, fd, mode)));
        printf("fchmodat_%o=%s\n", mode, result(syscall(SYS_fchmodat, AT_FDCWD, file, mode)));
        printf("fchmodat2_%o=%s\n", mode, result(syscall(NR_FCHMODAT2, AT_FDCWD, file, mode, 0)));
    }
    printf("setxattr=%s\n", result(syscall(SYS_setxattr, file, "user.hermetic", "v", 1, 0)));
    char params[128];
    memset(params, 0, sizeof params);
    printf("io_uring_setup=%s\n", result(syscall(NR_IO_URING_SETUP, 1, params)));
    printf("unassigned=%s\n", result(syscall(1000)));
    /* A bad descriptor: EBADF where the kernel has the call, else ENOSYS. */
    printf("mount_setattr=%s\n", result(syscall(NR_MOUNT_SETATTR, -1, "", 0, NULL, 0)));
#ifdef __x86_64__
    /* x32 calls: numbers with bit 30, from this very 64-bit process. */
    printf("x32=%s\n", syscall(0x40000000 | SYS_getpid) >= 0 ? "enabled" : "disabled");
    printf("x32_chmod_4755=%s\n", result(syscall(0x40000000 | SYS_chmod, file, 04755)));
#endif
    struct {
        unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    } args;
    memset(&args, 0, sizeof args);
    args.flags = NEW_USER_NAMESPACE;
    args.exit_signal = SIGCHLD;
    printf("clone3_newuser=%s\n", spawn(syscall(NR_CLONE3, &args, sizeof args)));
    printf("clone_newuser=%s\n", spawn(syscall(SYS_clone, NEW_USER_NAMESPACE | SIGCHLD, 0, 0, 0, 0)));
    printf("fork=%s\n", spawn(syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0)));
    /* Last: this one moves the probe into a new user namespace. */
    printf("unshare_newuser=%s\n", result(syscall(SYS_unshare, NEW_USER_NAMESPACE)));
    return 0;
}
