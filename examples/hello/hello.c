#include <stdio.h>

int main(void) {
    printf("Hello from a hermetic build!\n");
    return 0;
}
