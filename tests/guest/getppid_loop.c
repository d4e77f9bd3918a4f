/* getppid_loop N: N raw getppid syscalls (syscall(2), so none is cached),
 * then prints "calls elapsed_ns". The guest scenario times it with and
 * without watcher attached: a syscall no watcher hook is about, so what
 * it pays is what every unrelated syscall on the host pays. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    struct timespec a, b;
    long sum = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++)
        sum += syscall(SYS_getppid);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long long ns = (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    printf("%ld %lld\n", n, ns);
    return sum == 0; /* keeps the loop */
}
