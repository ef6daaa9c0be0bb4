# A bare LF before ".": the dot is content, only CR LF . CR LF ends the data, and the
# message is refused (bare_newline = reject); the smuggled commands are never commands.
< 220
> EHLO client.test
<* 250
> MAIL FROM:<a@b.example>
< 250
> RCPT TO:<u@example.com>
< 250
> DATA
< 354
>> Subject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@evil.example>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nsmuggled\r\n.\r\n
< 550 5.6.0
> QUIT
< 221
