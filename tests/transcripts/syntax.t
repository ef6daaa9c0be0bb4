# Bad syntax never reaches the filters: a clear 5xx for each.
< 220
> EHLO
< 501 5.5.4
> EHLO client.test
<* 250
> MAIL FROM:a@b.example
< 250 2.1.0
> RCPT TO:<u@example.com
< 501 5.1.3
> RCPT TO:<u@@example.com>
< 501 5.1.3
> RCPT TO:<u@example.com> FOO=BAR
< 555 5.5.4
> RCPT TO:<>
< 501 5.1.3
> RCPT TO:<Postmaster>
< 250 2.1.5
> RCPT TO:<üser@example.com>
< 553 5.6.7
>> HELO a\x00b\r\n
< 500 5.5.2
> XYZZY
< 500 5.5.2
> TURN
< 502 5.5.1
> GET / HTTP/1.1
< 421 4.7.0
<. CLOSED
