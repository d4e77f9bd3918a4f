/* Execs, binds, listens and exits at once: a listener whose process is
 * gone before anyone could read /proc. Prints its pid and port first. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 1) ||
        getsockname(fd, (struct sockaddr *)&addr, &len)) {
        perror("flash_listener");
        return 1;
    }
    printf("%d %d\n", getpid(), ntohs(addr.sin_port));
    return 0;
}
