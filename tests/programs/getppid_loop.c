/* Calls getppid() N times and prints the nanoseconds it took: a syscall no
 * hook of watcher's is about, so its cost is what an attached syscall
 * tracepoint adds to every task (xtask bench guest-peers). */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long calls = argc > 1 ? atol(argv[1]) : 0;
    if (calls <= 0) {
        fprintf(stderr, "usage: getppid_loop CALLS\n");
        return 2;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long i = 0; i < calls; i++)
        syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &end);
    printf("%lld\n", (long long)(end.tv_sec - start.tv_sec) * 1000000000LL + (end.tv_nsec - start.tv_nsec));
    return 0;
}
