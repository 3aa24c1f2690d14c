// The Device Provisioning Service's enrollments: individual enrollments (one device, by
// registration id) and enrollment groups (many devices sharing a group key or a signing
// certificate), in the JSON shape of DPS's service API (api-version 2021-10-01), so the unmodified
// provisioning service SDK reads and writes them.
//
// This module owns their rules: what a valid enrollment is (ids, attestation, policies), the
// defaults Azure fills in (symmetric keys generated when omitted, provisioningStatus enabled,
// reprovisionPolicy {updateHubAssignment, migrateDeviceData} true, allocationPolicy hashed),
// ETags from the store's versions, created and updated times, queries with continuation tokens
// and bulk operations. TPM attestation is refused: this hub has no TPM activation.
//
// State: kv `dps/enrollment/<lower-case id>` and `dps/group/<lower-case id>` (ids compare
// ignoring case, as in Azure), the document as the API shows it. No I/O beyond the kv store; every
// method blocks on it.
#pragma once

#include "common/error.hpp"
#include "common/time.hpp"
#include "storage/kv_store.hpp"

#include <boost/json/object.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace iothub::dps {

enum class enrollment_kind { individual, group };

// The id field ("registrationId" or "enrollmentGroupId") and how messages name the kind.
std::string_view id_field(enrollment_kind k);

// Azure's registration id rule: 1 to 128 letters, digits, '-', '.', '_' and ':', ending with a
// letter, a digit or '-'. errc::argument_invalid naming `what` otherwise.
result<void> check_registration_id(std::string_view id, std::string_view what);

struct query_page {
    std::vector<boost::json::object> items;
    std::string continuation;  // empty: the last page
};

class enrollment_store {
  public:
    explicit enrollment_store(storage::kv_store& kv) : kv_(kv) {}

    // Creates or replaces the enrollment `id` with `doc` (its id field, when present, must be
    // `id`). `if_match`: empty for unconditional, "*" for "must exist", else an ETag the
    // current version must have (errc::precondition_failed). Returns the stored document.
    result<boost::json::object> put(enrollment_kind k, std::string_view id,
                                    const boost::json::object& doc, std::string_view if_match,
                                    sys_time now);
    // errc::not_found when there is none.
    result<boost::json::object> get(enrollment_kind k, std::string_view id);
    result<void> remove(enrollment_kind k, std::string_view id, std::string_view if_match);
    // The attestation mechanism, keys included.
    result<boost::json::object> attestation(enrollment_kind k, std::string_view id);

    // `SELECT * FROM enrollments` (or enrollmentGroups): every enrollment in id order, `max` per
    // page, resuming after `continuation`.
    result<query_page> query(enrollment_kind k, std::string_view query_text, std::size_t max,
                             std::string_view continuation);

    // DPS's bulk operation: {"mode": create|update|updateIfMatchETag|delete, "enrollments": [...]}
    // with at most 10 enrollments; answers {"isSuccessful", "errors": [{<id field>, errorCode,
    // errorStatus}]}. errc::argument_invalid when the request itself is malformed.
    result<boost::json::object> bulk(enrollment_kind k, const boost::json::object& request,
                                     sys_time now);

  private:
    storage::kv_store& kv_;
};

}  // namespace iothub::dps
