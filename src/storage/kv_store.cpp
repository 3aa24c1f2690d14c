#include "storage/kv_store.hpp"

namespace iothub::storage {

result<void> precondition::check(const std::optional<std::uint64_t>& current) const {
    switch (kind_) {
        case kind::none:
            return {};
        case kind::absent:
            if (current) return error(errc::already_exists, "The key already exists.");
            return {};
        case kind::exists:
            if (!current) return error(errc::not_found, "The key does not exist.");
            return {};
        case kind::version:
            if (!current) return error(errc::not_found, "The key does not exist.");
            if (*current != version_)
                return error(errc::precondition_failed, "The version does not match.");
            return {};
    }
    return {};
}

result<void> kv_write::admissible(const std::optional<std::uint64_t>& current) const {
    if (auto ok = condition.check(current); !ok) return ok;
    if (operation == op::remove && !current)
        return error(errc::not_found, "The key does not exist.");
    return {};
}

result<std::uint64_t> kv_store::put(std::string_view key, std::string_view value,
                                    precondition condition) {
    kv_write w{kv_write::op::put, std::string(key), std::string(value), condition};
    auto results = apply(std::span(&w, 1));
    return std::move(results.front());
}

result<void> kv_store::remove(std::string_view key, precondition condition) {
    kv_write w{kv_write::op::remove, std::string(key), {}, condition};
    auto results = apply(std::span(&w, 1));
    if (!results.front()) return results.front().error();
    return {};
}

}  // namespace iothub::storage
