/* A listener that daemonizes the classic way (issue 11): bind and listen
 * on 127.0.0.1:PORT, fork, the parent _exits at once, the child calls
 * setsid and forks again, the middle child exits and the grandchild keeps
 * listening until it is killed. Each process appends "ROLE PID" to
 * PIDFILE (O_APPEND, one write each) before it forks or waits, so that the
 * test knows every process that held the socket, even those that were
 * killed before they said more.
 *
 * usage: daemonizing_listener PORT PIDFILE */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void say(const char *pidfile, const char *role) {
    char line[64];
    int n = snprintf(line, sizeof line, "%s %d\n", role, getpid());
    int fd = open(pidfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) {
        perror("daemonizing_listener: pidfile");
        _exit(1);
    }
    close(fd);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT PIDFILE\n", argv[0]);
        return 2;
    }
    const char *pidfile = argv[2];
    say(pidfile, "parent");
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_port = htons((unsigned short)atoi(argv[1])),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 16)) {
        perror("daemonizing_listener: listen");
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        perror("daemonizing_listener: fork");
        return 1;
    }
    if (pid > 0)
        _exit(0); /* the parent leaves at once, as a daemon's launcher does */
    say(pidfile, "child");
    if (setsid() < 0) {
        perror("daemonizing_listener: setsid");
        _exit(1);
    }
    pid = fork();
    if (pid < 0) {
        perror("daemonizing_listener: fork");
        _exit(1);
    }
    if (pid > 0)
        _exit(0);
    say(pidfile, "grandchild");
    /* Detach from the test's pipes like a daemon, and keep listening. */
    int null = open("/dev/null", O_RDWR);
    for (int i = 0; null >= 0 && i < 3; i++)
        if (i != fd) /* the listener itself may be 0-2 if the test's stdio was closed */
            dup2(null, i);
    for (;;)
        pause();
}
