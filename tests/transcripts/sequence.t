# Commands out of order get 503 with an enhanced code; the session goes on.
< 220
> MAIL FROM:<a@b.example>
< 503 5.5.1
> HELO client.test
< 250
> RCPT TO:<u@example.com>
< 503 5.5.1
> DATA
< 503 5.5.1
> MAIL FROM:<a@b.example>
< 250 2.1.0
> MAIL FROM:<a@b.example>
< 503 5.5.1
> DATA
< 503 5.5.1
> QUIT
< 221
