/* Lists the keys linked to the calling process's session keyring, one line
 * each: its description, then its payload when it can be read, else the
 * error. Prints "keyring: none" when there is no session keyring, and
 * "keys: N" last; then links a key "hermetic-added" to that keyring and
 * says whether it could. For the test that a builder does not reach the keys of
 * the session it was started from. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define KEYCTL_GET_KEYRING_ID 0
#define KEYCTL_DESCRIBE 6
#define KEYCTL_READ 11
#define KEY_SPEC_SESSION_KEYRING -3

static long keyctl(long op, long a, long b, long c) {
    return syscall(SYS_keyctl, op, a, b, c, 0L);
}

int main(void) {
    long keyring = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0, 0);
    if (keyring < 0) {
        printf("keyring: none (%s)\n", strerror(errno));
        return 0;
    }
    int ids[256];
    long size = keyctl(KEYCTL_READ, keyring, (long)ids, sizeof ids);
    if (size < 0) {
        printf("keyring: unreadable (%s)\n", strerror(errno));
        return 0;
    }
    long count = size / (long)sizeof ids[0];
    if (count > 256)
        count = 256;
    for (long i = 0; i < count; i++) {
        char description[512] = "";
        char payload[512] = "";
        if (keyctl(KEYCTL_DESCRIBE, ids[i], (long)description, sizeof description - 1) < 0)
            snprintf(description, sizeof description, "(%s)", strerror(errno));
        long got = keyctl(KEYCTL_READ, ids[i], (long)payload, sizeof payload - 1);
        if (got < 0)
            snprintf(payload, sizeof payload, "(%s)", strerror(errno));
        else
            payload[got < (long)sizeof payload - 1 ? got : (long)sizeof payload - 1] = 0;
        printf("key: %s: %s\n", description, payload);
    }
    printf("keys: %ld\n", count);
    long added = syscall(SYS_add_key, "user", "hermetic-added", "x", 1L,
                         (long)KEY_SPEC_SESSION_KEYRING);
    printf("added: %s\n", added < 0 ? strerror(errno) : "yes");
    return 0;
}
