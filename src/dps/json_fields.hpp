// Reading the provisioning API's JSON: members are matched ignoring case, as Azure's service
// does (DPS documents spell some fields two ways), and a null member counts as absent.
#pragma once

#include "common/encoding.hpp"

#include <boost/json/object.hpp>

#include <string>
#include <string_view>

namespace iothub::dps {

inline const boost::json::value* member(const boost::json::object& o, std::string_view name) {
    for (const auto& [k, v] : o)
        if (iequals(k, name)) return v.is_null() ? nullptr : &v;
    return nullptr;
}

// A string member's text; empty when it is absent or not a string.
inline std::string text_member(const boost::json::object& o, std::string_view name) {
    const auto* v = member(o, name);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

}  // namespace iothub::dps
