-- SPDX-License-Identifier: MIT
-- gtube.lua - every stage one by one; GTUBE in the body is refused at end of message with a
-- reply code (test_milter.py reads "554 5.7.1" in the log). miltertest(8), from the
-- miltertest package; MILTER_SOCK names the gateway.
conn = mt.connect(os.getenv("MILTER_SOCK"), 20, 0.25)
if conn == nil then error "mt.connect() failed" end
mt.macro(conn, SMFIC_CONNECT, "j", "mta.test", "{daemon_name}", "smtpd")
if mt.conninfo(conn, "client.test", "192.0.2.10") ~= nil then error "conninfo failed" end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error "connect: not continue" end
if mt.helo(conn, "client.test") ~= nil then error "helo failed" end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error "helo: not continue" end
mt.macro(conn, SMFIC_MAIL, "i", "MT0001")
if mt.mailfrom(conn, "<a@example.org>") ~= nil then error "mailfrom failed" end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error "mail: not continue" end
if mt.rcptto(conn, "<u@example.com>") ~= nil then error "rcptto failed" end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error "rcpt: not continue" end
if mt.data(conn) ~= nil then error "data failed" end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error "data: not continue" end
if mt.header(conn, "From", "a@example.org") ~= nil then error "header failed" end
if mt.header(conn, "Subject", "gtube") ~= nil then error "header failed" end
if mt.eoh(conn) ~= nil then error "eoh failed" end
if mt.bodystring(conn, "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n") ~= nil then
    error "body failed"
end
if mt.eom(conn) ~= nil then error "eom failed" end
if mt.getreply(conn) ~= SMFIR_REPLYCODE then error "eom: not a reply code" end
mt.disconnect(conn)
