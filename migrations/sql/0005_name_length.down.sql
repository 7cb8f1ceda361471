DROP TRIGGER service_name_length ON service;
DROP TRIGGER hardware_type_name_length ON hardware_type;
DROP FUNCTION machinedb.check_name_length_v1();
