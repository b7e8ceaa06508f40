#pragma once
// pqscope: nestable transaction scopes for libpq, safe behind PgBouncer's
// transaction pooling. Include this header (or the single header of the same
// name in single_include/) and link libpq.

#include <pqscope/errors.hpp>
#include <pqscope/callback.hpp>
#include <pqscope/options.hpp>
#include <pqscope/stats.hpp>
#include <pqscope/params.hpp>
#include <pqscope/numeric.hpp>
#include <pqscope/interval.hpp>
#include <pqscope/uuid.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/timestamptz.hpp>
#include <pqscope/enums.hpp>
#include <pqscope/result.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/copy.hpp>
#include <pqscope/connection.hpp>
#include <pqscope/database.hpp>
#include <pqscope/transaction.hpp>
#include <pqscope/pool.hpp>
#include <pqscope/replica_set.hpp>

#define PQSCOPE_VERSION_MAJOR 0
#define PQSCOPE_VERSION_MINOR 1
#define PQSCOPE_VERSION_PATCH 0
