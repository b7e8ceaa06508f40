#pragma once
// Statements that leave session state behind, refused on connections with
// pooling::transaction. Behind PgBouncer in transaction pooling mode the server
// connection goes back to the pool after every transaction (after every statement
// in autocommit), so whatever a statement leaves in the server session is
// inherited by the next client that borrows it.
//
// The text is read as the server's lexer reads it (sql_lexer.hpp), and twice when
// it has a backslash: once with standard_conforming_strings on and once off, so
// that the verdict holds whichever the session has. Every statement of the text
// is read; what cannot be shown to end with the transaction is refused. Refused:
//  - SET, except SET LOCAL, SET TRANSACTION and SET CONSTRAINTS (all of which end
//    with the transaction), and RESET. Except the parameters PgBouncer itself
//    tracks per client and restores on every server connection it lends:
//    client_encoding (SET NAMES), DateStyle, TimeZone (SET TIME ZONE),
//    standard_conforming_strings and application_name.
//  - LISTEN, UNLISTEN; PREPARE, EXECUTE, DEALLOCATE (PREPARE TRANSACTION is left
//    to the transaction control check); DECLARE ... WITH HOLD; DISCARD; LOAD.
//  - UPDATE of pg_settings (a session-level SET by another name).
//  - Temporary objects, which outlive the transaction: CREATE TEMP TABLE without
//    ON COMMIT DROP, temporary views and sequences, anything created in pg_temp,
//    SELECT ... INTO TEMP; also behind EXPLAIN ANALYZE.
//  - Calls, anywhere in the code, of the session advisory lock functions
//    (pg_advisory_lock, pg_try_advisory_lock, their _shared forms, pg_advisory_unlock*),
//    and of set_config() unless its third argument is the literal true ('t', 'on',
//    ... as a plain string, optionally ::bool). Names are compared as the server
//    resolves them: case-folded, "quoted", U&"escaped", schema-qualified or not.
//  - DO blocks whose body (in any string form) does any of the above, runs dynamic
//    SQL (EXECUTE), or is in a language other than PL/pgSQL.
// Not seen, so sent as written: what functions, procedures, triggers and rules do
// when they run (a function may SET or lock internally); SET inside dblink and
// the like; views that become temporary because they read a temporary table.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_text.hpp>

namespace pqscope::detail {

// Empty when the statement is safe behind a transaction-pooling PgBouncer;
// otherwise why not, and what to use instead.
PQSCOPE_DECL std::string session_state_hazard(std::string_view sql);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/session_state.ipp>
#endif
