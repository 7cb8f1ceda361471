DROP TRIGGER host_boot_options_check ON host;
DROP TRIGGER hardware_type_boot_options_check ON hardware_type;
DROP TRIGGER subnet_boot_options_check ON subnet;
DROP FUNCTION machinedb.check_boot_options_v1();
ALTER TABLE host
    DROP COLUMN next_server, DROP COLUMN boot_file, DROP COLUMN boot_file_bios,
    DROP COLUMN boot_file_uefi_x64, DROP COLUMN boot_file_uefi_arm64;
ALTER TABLE hardware_type
    DROP COLUMN next_server, DROP COLUMN boot_file, DROP COLUMN boot_file_bios,
    DROP COLUMN boot_file_uefi_x64, DROP COLUMN boot_file_uefi_arm64;
ALTER TABLE subnet
    DROP COLUMN next_server, DROP COLUMN boot_file, DROP COLUMN boot_file_bios,
    DROP COLUMN boot_file_uefi_x64, DROP COLUMN boot_file_uefi_arm64;
DROP FUNCTION machinedb.is_next_server(inet);
DROP FUNCTION machinedb.is_boot_file_name(text);
