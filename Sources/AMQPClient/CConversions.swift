// Conversions between Swift values and rabbitmq-c's C structs. C memory made here lives in a
// `CArena` and is freed with it; C memory read here belongs to the connection's pools and is
// copied before the pools are released.
import CRabbitMQ
import Foundation

/// Owns the C allocations behind one call into rabbitmq-c (strings, table entries).
final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit { reset() }

    func reset() {
        for pointer in allocations { free(pointer) }
        allocations.removeAll(keepingCapacity: true)
    }

    func bytes(_ string: String) -> amqp_bytes_t {
        var utf8 = string.utf8CString  // NUL-terminated: also usable as a C string
        let count = utf8.count
        let pointer = malloc(count)!
        utf8.withUnsafeMutableBytes { pointer.copyMemory(from: $0.baseAddress!, byteCount: count) }
        allocations.append(pointer)
        return amqp_bytes_t(len: count - 1, bytes: pointer)
    }

    func cString(_ string: String) -> UnsafePointer<CChar> {
        UnsafePointer(bytes(string).bytes.assumingMemoryBound(to: CChar.self))
    }

    func bytes(_ array: [UInt8]) -> amqp_bytes_t {
        let pointer = malloc(max(array.count, 1))!
        array.withUnsafeBytes { if $0.count > 0 { pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
        allocations.append(pointer)
        return amqp_bytes_t(len: array.count, bytes: pointer)
    }

    func array<T>(of type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let pointer = malloc(max(count, 1) * MemoryLayout<T>.stride)!
        allocations.append(pointer)
        return pointer.bindMemory(to: T.self, capacity: max(count, 1))
    }

    func table(_ table: AMQPTable) -> amqp_table_t {
        guard !table.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let entries = array(of: amqp_table_entry_t.self, count: table.count)
        for (index, (key, value)) in table.sorted(by: { $0.key < $1.key }).enumerated() {
            entries[index] = amqp_table_entry_t(key: bytes(key), value: field(value))
        }
        return amqp_table_t(num_entries: Int32(table.count), entries: entries)
    }

    func field(_ value: AMQPFieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        func kind(_ k: amqp_field_value_kind_t) -> UInt8 { UInt8(k.rawValue) }
        switch value {
        case .bool(let v):
            field.kind = kind(AMQP_FIELD_KIND_BOOLEAN)
            field.value.boolean = v ? 1 : 0
        case .int8(let v):
            field.kind = kind(AMQP_FIELD_KIND_I8)
            field.value.i8 = v
        case .uint8(let v):
            field.kind = kind(AMQP_FIELD_KIND_U8)
            field.value.u8 = v
        case .int16(let v):
            field.kind = kind(AMQP_FIELD_KIND_I16)
            field.value.i16 = v
        case .uint16(let v):
            field.kind = kind(AMQP_FIELD_KIND_U16)
            field.value.u16 = v
        case .int32(let v):
            field.kind = kind(AMQP_FIELD_KIND_I32)
            field.value.i32 = v
        case .uint32(let v):
            field.kind = kind(AMQP_FIELD_KIND_U32)
            field.value.u32 = v
        case .int64(let v):
            field.kind = kind(AMQP_FIELD_KIND_I64)
            field.value.i64 = v
        case .uint64(let v):
            field.kind = kind(AMQP_FIELD_KIND_U64)
            field.value.u64 = v
        case .float(let v):
            field.kind = kind(AMQP_FIELD_KIND_F32)
            field.value.f32 = v
        case .double(let v):
            field.kind = kind(AMQP_FIELD_KIND_F64)
            field.value.f64 = v
        case .decimal(let scale, let v):
            field.kind = kind(AMQP_FIELD_KIND_DECIMAL)
            field.value.decimal = amqp_decimal_t(decimals: scale, value: v)
        case .string(let v):
            field.kind = kind(AMQP_FIELD_KIND_UTF8)
            field.value.bytes = bytes(v)
        case .bytes(let v):
            field.kind = kind(AMQP_FIELD_KIND_BYTES)
            field.value.bytes = bytes(v)
        case .timestamp(let v):
            field.kind = kind(AMQP_FIELD_KIND_TIMESTAMP)
            field.value.u64 = v
        case .table(let v):
            field.kind = kind(AMQP_FIELD_KIND_TABLE)
            field.value.table = table(v)
        case .void: field.kind = kind(AMQP_FIELD_KIND_VOID)
        case .array(let values):
            field.kind = kind(AMQP_FIELD_KIND_ARRAY)
            let entries = array(of: amqp_field_value_t.self, count: values.count)
            for (index, element) in values.enumerated() { entries[index] = self.field(element) }
            field.value.array = amqp_array_t(num_entries: Int32(values.count), entries: values.isEmpty ? nil : entries)
        }
        return field
    }

    func properties(_ properties: AMQPProperties) -> amqp_basic_properties_t {
        var c = amqp_basic_properties_t()
        var flags: amqp_flags_t = 0
        if let v = properties.contentType {
            c.content_type = bytes(v)
            flags |= ringing_flag_content_type
        }
        if let v = properties.contentEncoding {
            c.content_encoding = bytes(v)
            flags |= ringing_flag_content_encoding
        }
        if !properties.headers.isEmpty {
            c.headers = table(properties.headers)
            flags |= ringing_flag_headers
        }
        if let v = properties.deliveryMode {
            c.delivery_mode = v.rawValue
            flags |= ringing_flag_delivery_mode
        }
        if let v = properties.priority {
            c.priority = v
            flags |= ringing_flag_priority
        }
        if let v = properties.correlationID {
            c.correlation_id = bytes(v)
            flags |= ringing_flag_correlation_id
        }
        if let v = properties.replyTo {
            c.reply_to = bytes(v)
            flags |= ringing_flag_reply_to
        }
        if let v = properties.expiration {
            c.expiration = bytes(v)
            flags |= ringing_flag_expiration
        }
        if let v = properties.messageID {
            c.message_id = bytes(v)
            flags |= ringing_flag_message_id
        }
        if let v = properties.timestamp {
            c.timestamp = v
            flags |= ringing_flag_timestamp
        }
        if let v = properties.type {
            c.type = bytes(v)
            flags |= ringing_flag_type
        }
        if let v = properties.userID {
            c.user_id = bytes(v)
            flags |= ringing_flag_user_id
        }
        if let v = properties.appID {
            c.app_id = bytes(v)
            flags |= ringing_flag_app_id
        }
        c._flags = flags
        return c
    }
}

extension String {
    /// Copies C bytes (not necessarily NUL-terminated) into a String.
    init(amqp bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = ""
            return
        }
        self = String(decoding: UnsafeRawBufferPointer(start: base, count: bytes.len), as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    init(amqp bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = []
            return
        }
        self = Array(UnsafeRawBufferPointer(start: base, count: bytes.len))
    }
}

extension AMQPFieldValue {
    /// Copies a C field value; unknown kinds become `.void`.
    init(amqp field: amqp_field_value_t) {
        switch amqp_field_value_kind_t(rawValue: UInt32(field.kind)) {
        case AMQP_FIELD_KIND_BOOLEAN: self = .bool(field.value.boolean != 0)
        case AMQP_FIELD_KIND_I8: self = .int8(field.value.i8)
        case AMQP_FIELD_KIND_U8: self = .uint8(field.value.u8)
        case AMQP_FIELD_KIND_I16: self = .int16(field.value.i16)
        case AMQP_FIELD_KIND_U16: self = .uint16(field.value.u16)
        case AMQP_FIELD_KIND_I32: self = .int32(field.value.i32)
        case AMQP_FIELD_KIND_U32: self = .uint32(field.value.u32)
        case AMQP_FIELD_KIND_I64: self = .int64(field.value.i64)
        case AMQP_FIELD_KIND_U64: self = .uint64(field.value.u64)
        case AMQP_FIELD_KIND_F32: self = .float(field.value.f32)
        case AMQP_FIELD_KIND_F64: self = .double(field.value.f64)
        case AMQP_FIELD_KIND_DECIMAL: self = .decimal(scale: field.value.decimal.decimals, value: field.value.decimal.value)
        case AMQP_FIELD_KIND_UTF8: self = .string(String(amqp: field.value.bytes))
        case AMQP_FIELD_KIND_BYTES: self = .bytes([UInt8](amqp: field.value.bytes))
        case AMQP_FIELD_KIND_TIMESTAMP: self = .timestamp(field.value.u64)
        case AMQP_FIELD_KIND_TABLE: self = .table(AMQPTable(amqp: field.value.table))
        case AMQP_FIELD_KIND_ARRAY:
            let array = field.value.array
            self = .array((0..<Int(array.num_entries)).map { AMQPFieldValue(amqp: array.entries[$0]) })
        default: self = .void
        }
    }
}

extension Dictionary where Key == String, Value == AMQPFieldValue {
    init(amqp table: amqp_table_t) {
        self.init(minimumCapacity: Int(table.num_entries))
        for index in 0..<Int(table.num_entries) {
            let entry = table.entries[index]
            self[String(amqp: entry.key)] = AMQPFieldValue(amqp: entry.value)
        }
    }
}

extension AMQPProperties {
    init(amqp c: amqp_basic_properties_t) {
        self.init()
        let flags = c._flags
        func has(_ flag: amqp_flags_t) -> Bool { flags & flag != 0 }
        if has(ringing_flag_content_type) { contentType = String(amqp: c.content_type) }
        if has(ringing_flag_content_encoding) { contentEncoding = String(amqp: c.content_encoding) }
        if has(ringing_flag_headers) { headers = AMQPTable(amqp: c.headers) }
        if has(ringing_flag_delivery_mode) { deliveryMode = DeliveryMode(rawValue: c.delivery_mode) }
        if has(ringing_flag_priority) { priority = c.priority }
        if has(ringing_flag_correlation_id) { correlationID = String(amqp: c.correlation_id) }
        if has(ringing_flag_reply_to) { replyTo = String(amqp: c.reply_to) }
        if has(ringing_flag_expiration) { expiration = String(amqp: c.expiration) }
        if has(ringing_flag_message_id) { messageID = String(amqp: c.message_id) }
        if has(ringing_flag_timestamp) { timestamp = c.timestamp }
        if has(ringing_flag_type) { type = String(amqp: c.type) }
        if has(ringing_flag_user_id) { userID = String(amqp: c.user_id) }
        if has(ringing_flag_app_id) { appID = String(amqp: c.app_id) }
    }
}
