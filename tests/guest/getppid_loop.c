/* getppid_loop CHUNKS CALLS: CHUNKS times, CALLS raw getppid syscalls
 * (syscall(2), so none is cached), each chunk followed by a fixed amount
 * of pure user-space work (no syscall) timed the same way. Prints
 * "calls_per_chunk min_ns_per_call median_ns_per_call median_ratio",
 * where ratio is a chunk's syscall time over the user-space chunk next to
 * it: under emulation (TCG) on a shared host, single runs are 2-3x apart,
 * but both halves of a pair are slowed alike, so the ratio holds.
 * The guest scenario runs it with and without watcher attached: a syscall
 * no watcher hook is about, so what it pays is what every unrelated
 * syscall on the host pays. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int chunks = argc > 1 ? atoi(argv[1]) : 50;
    long calls = argc > 2 ? atol(argv[2]) : 20000;
    double *per_call = calloc(chunks, sizeof(double)), *ratio = calloc(chunks, sizeof(double));
    volatile unsigned long sink = 0;
    long sum = 0;
    for (int c = 0; c < chunks; c++) {
        long long a = now();
        for (long i = 0; i < calls; i++)
            sum += syscall(SYS_getppid);
        long long b = now();
        unsigned long x = (unsigned long)c + 1;
        for (long i = 0; i < calls * 50; i++)
            x = x * 6364136223846793005UL + 1442695040888963407UL;
        sink += x;
        long long d = now();
        per_call[c] = (double)(b - a) / calls;
        ratio[c] = (double)(b - a) / (double)(d - b);
    }
    qsort(per_call, chunks, sizeof(double), cmp);
    qsort(ratio, chunks, sizeof(double), cmp);
    printf("%ld %.1f %.1f %.4f\n", calls, per_call[0], per_call[chunks / 2], ratio[chunks / 2]);
    return sum == 0 && sink == 0;
}
