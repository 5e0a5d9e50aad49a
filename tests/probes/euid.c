/* Probe for hermetic's no_new_privs test: prints its effective uid. Made
 * setuid root by the test, it shows whether executing it raised privileges. */
#include <stdio.h>
#include <unistd.h>

int main(void) {
    printf("euid=%d\n", (int)geteuid());
    return 0;
}
