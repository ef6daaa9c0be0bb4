# A plain transaction and the housekeeping verbs.
< 220
> EHLO client.test
<* 250
> MAIL FROM:<a@b.example>
< 250 2.1.0
> RCPT TO:<u@example.com>
< 250 2.1.5
> DATA
< 354
> Subject: t
>
> body
> ..a line that starts with a dot
> .
< 250 2.0.0
> NOOP
< 250 2.0.0
> RSET
< 250 2.0.0
> VRFY u
< 252 2.5.2
> QUIT
< 221 2.0.0
<. CLOSED
