// The coordinator's tables, written once for both stores: versioned migrations in the SQL that
// SQLite and PostgreSQL share, with the few words they spell differently filled in per dialect.
// Nothing here touches a database; each store applies the migrations its own way.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/result.h"

namespace darkbloom::coordinator {

enum class SqlDialect { sqlite, postgres };

// Entry i brings a database from schema version i to i + 1.
std::vector<std::string> schema_migrations(SqlDialect dialect);
int64_t latest_schema_version();

// Creates the one-row table that holds a database's schema version, if it is missing.
std::string create_schema_version_table(SqlDialect dialect);
// Records that a database at version `from` is now at version `to` (a database at 0 has no row).
std::string set_schema_version(int64_t from, int64_t to);
// Errc::unsupported for a database newer than this coordinator.
Status check_schema_version(int64_t version);

}  // namespace darkbloom::coordinator
