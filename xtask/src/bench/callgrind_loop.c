// Listener generator: waits for the file argv[3], then opens argv[1] TCP listeners
// (socket, bind 127.0.0.1:0, listen, close) at about argv[2] per second (0: as fast as possible).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static long long now_ns(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1000000000LL+t.tv_nsec;}
int main(int argc,char**argv){
  long n=atol(argv[1]); long rate=atol(argv[2]); const char*go=argv[3];
  printf("%d\n",getpid()); fflush(stdout);
  while(access(go,F_OK)!=0) usleep(10000);
  struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_addr.s_addr=htonl(0x7f000001);
  long long start=now_ns();
  for(long i=0;i<n;i++){
    // Paced by sleeping to each opening's due time: a sleep that overshoots
    // (timer slack) is made up by the openings then due, back to back, so
    // the loop never spins and the rate holds.
    if(rate>0){long long due=start+i*1000000000LL/rate, d=due-now_ns(); if(d>0){struct timespec t={d/1000000000LL,d%1000000000LL}; nanosleep(&t,0);} }
    int s=socket(AF_INET,SOCK_STREAM,0); a.sin_port=0;
    if(bind(s,(void*)&a,sizeof a)) perror("bind");
    if(listen(s,1)) perror("listen");
    close(s);
  }
  fprintf(stderr,"done %ld in %.3f s\n",n,(now_ns()-start)/1e9);
  return 0;
}
