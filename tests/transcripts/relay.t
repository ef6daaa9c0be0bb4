@ 127.0.0.2
# A client outside mynetworks: only our domains, no sender-specified routing.
< 220
> EHLO outside.test
<* 250
> MAIL FROM:<a@b.example>
< 250 2.1.0
> RCPT TO:<u@foreign.example>
< 554 5.7.1
> RCPT TO:<u%foreign.example@example.com>
< 554 5.7.1
> RCPT TO:<@example.com:u@foreign.example>
< 554 5.7.1
> RCPT TO:<u@[127.0.0.1]>
< 554 5.7.1
> RCPT TO:<u@example.com>
< 250 2.1.5
> QUIT
< 221
