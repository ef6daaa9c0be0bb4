-- SPDX-License-Identifier: MIT
-- authres.lua - a forged Authentication-Results claiming our authserv-id is deleted
-- (smfi_chgheader), ours is inserted at the top (smfi_insheader); then an abort and a second
-- transaction on the same connection, which passes
conn = mt.connect(os.getenv("MILTER_SOCK"), 20, 0.25)
if conn == nil then error "mt.connect() failed" end
if mt.conninfo(conn, "client.test", "192.0.2.10") ~= nil then error "conninfo failed" end
if mt.mailfrom(conn, "<a@example.org>") ~= nil then error "mailfrom failed" end
if mt.rcptto(conn, "<u@example.com>") ~= nil then error "rcptto failed" end
if mt.header(conn, "Subject", "first") ~= nil then error "header failed" end
if mt.abort(conn) ~= nil then error "abort failed" end
if mt.mailfrom(conn, "<a@example.org>") ~= nil then error "mailfrom 2 failed" end
if mt.getreply(conn) ~= SMFIR_CONTINUE then error "mail 2: not continue" end
if mt.rcptto(conn, "<u@example.com>") ~= nil then error "rcptto 2 failed" end
if mt.header(conn, "Authentication-Results", "other.test; spf=pass") ~= nil then error "h" end
if mt.header(conn, "Authentication-Results", "gw.test; dkim=pass header.d=forged.test") ~= nil then
    error "h"
end
if mt.header(conn, "From", "a@example.org") ~= nil then error "header failed" end
if mt.bodystring(conn, "hello\r\n") ~= nil then error "body failed" end
if mt.eom(conn) ~= nil then error "eom failed" end
if mt.getreply(conn) ~= SMFIR_ACCEPT and mt.getreply(conn) ~= SMFIR_CONTINUE then
    error "eom: not accepted"
end
if not mt.eom_check(conn, MT_HDRDELETE, "Authentication-Results") then error "no delete" end
if not mt.eom_check(conn, MT_HDRINSERT, "Authentication-Results") then error "no insert" end
mt.disconnect(conn)
